//! JSON-RPC 2.0 over a [`Node`]: the one API that `bonghwa rpc`, the C ABI and the tests
//! speak. [`call`] takes one request (or a batch) as text and returns the response text;
//! [`event_notification`] turns an [`Event`] into the notification sent to clients.

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::event::Event;
use crate::node::{Node, NodeError};

/// Invalid JSON.
pub const PARSE_ERROR: i64 = -32700;
/// Valid JSON that is not a request.
pub const INVALID_REQUEST: i64 = -32600;
/// No such method.
pub const METHOD_NOT_FOUND: i64 = -32601;
/// Missing, extra or ill-typed parameters, or a value that is not allowed.
pub const INVALID_PARAMS: i64 = -32602;
/// The node has stopped.
pub const NODE_STOPPED: i64 = -32001;
/// Storage failed (disk full, damaged database).
pub const STORAGE_ERROR: i64 = -32002;
/// A connection could not be made.
pub const DIAL_ERROR: i64 = -32003;
/// A peer, chat or message is unknown.
pub const NOT_FOUND: i64 = -32004;
/// Too many undelivered messages.
pub const OUTBOX_FULL: i64 = -32005;
/// Too much under way (e.g. DHT lookups); try again shortly.
pub const BUSY: i64 = -32006;
/// Any other failure inside the node.
pub const INTERNAL_ERROR: i64 = -32603;
/// Largest request line accepted, in bytes.
pub const MAX_REQUEST_BYTES: usize = 256 * 1024;
/// Most requests in one batch.
pub const MAX_BATCH: usize = 64;

/// The answer to one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The response text, or `None` when the request was a notification (no `id`).
    pub json: Option<String>,
    /// The call asked the node to shut down (and it did): the server should exit.
    pub shutdown: bool,
}

/// Handles one request line (a request object or a batch array).
pub async fn call(node: &Node, text: &str) -> Response {
    if text.len() > MAX_REQUEST_BYTES {
        return Response {
            json: Some(error_response(
                Value::Null,
                INVALID_REQUEST,
                &format!(
                    "request of {} bytes exceeds the {MAX_REQUEST_BYTES}-byte limit",
                    text.len()
                ),
            )),
            shutdown: false,
        };
    }
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            return Response {
                json: Some(error_response(
                    Value::Null,
                    PARSE_ERROR,
                    &format!("invalid JSON: {e}"),
                )),
                shutdown: false,
            };
        }
    };
    match value {
        Value::Array(items) => {
            if items.is_empty() || items.len() > MAX_BATCH {
                return Response {
                    json: Some(error_response(
                        Value::Null,
                        INVALID_REQUEST,
                        &format!("a batch must hold 1 to {MAX_BATCH} requests"),
                    )),
                    shutdown: false,
                };
            }
            let mut out = Vec::new();
            let mut shutdown = false;
            for item in items {
                let (reply, stop) = call_one(node, item).await;
                shutdown |= stop;
                out.extend(reply);
            }
            Response {
                json: (!out.is_empty()).then(|| Value::Array(out).to_string()),
                shutdown,
            }
        }
        other => {
            let (reply, shutdown) = call_one(node, other).await;
            Response {
                json: reply.map(|v| v.to_string()),
                shutdown,
            }
        }
    }
}

fn error_response(id: Value, code: i64, message: &str) -> String {
    error_value(id, code, message).to_string()
}

fn error_value(id: Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// One request object → its response (unless it is a notification) and the shutdown flag.
async fn call_one(node: &Node, request: Value) -> (Option<Value>, bool) {
    let Value::Object(mut object) = request else {
        return (
            Some(error_value(
                Value::Null,
                INVALID_REQUEST,
                "a request must be a JSON object",
            )),
            false,
        );
    };
    let id = object.remove("id");
    let reply_id = id.clone().unwrap_or(Value::Null);
    if !matches!(
        &id,
        None | Some(Value::Number(_) | Value::String(_) | Value::Null)
    ) {
        return (
            Some(error_value(
                Value::Null,
                INVALID_REQUEST,
                "id must be a number, a string or null",
            )),
            false,
        );
    }
    if object.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return (
            Some(error_value(
                reply_id,
                INVALID_REQUEST,
                "\"jsonrpc\" must be \"2.0\"",
            )),
            false,
        );
    }
    let Some(method) = object
        .get("method")
        .and_then(Value::as_str)
        .map(str::to_owned)
    else {
        return (
            Some(error_value(
                reply_id,
                INVALID_REQUEST,
                "\"method\" must be a string",
            )),
            false,
        );
    };
    let params = object.remove("params").unwrap_or(Value::Null);
    let outcome = dispatch(node, &method, params).await;
    let shutdown = method == "shutdown" && outcome.is_ok();
    let response = match outcome {
        Ok(result) => json!({"jsonrpc": "2.0", "id": reply_id, "result": result}),
        Err((code, message)) => error_value(reply_id, code, &message),
    };
    (id.is_some().then_some(response), shutdown)
}

type Outcome = Result<Value, (i64, String)>;

/// The JSON-RPC error for a node error. Every variant is listed (no catch-all), so a new
/// one has to be given a code here: the caller's mistakes are -32602 or -32004, the node's
/// own failures -32603.
fn node_error(e: NodeError) -> (i64, String) {
    let code = match &e {
        NodeError::NodeStopped => NODE_STOPPED,
        NodeError::Store(_) => STORAGE_ERROR,
        // Not being a member any more is refused like any value the caller may not use.
        NodeError::Identity(_) | NodeError::InvalidArgument(_) | NodeError::NotAMember(_) => {
            INVALID_PARAMS
        }
        NodeError::NotFound(_) | NodeError::NotAContact(_) | NodeError::NoSuchGroup(_) => NOT_FOUND,
        NodeError::Dial { .. } => DIAL_ERROR,
        NodeError::OutboxFull(_) => OUTBOX_FULL,
        NodeError::Busy(_) => BUSY,
        NodeError::Net(_)
        | NodeError::DataDir { .. }
        | NodeError::Crypto(_)
        | NodeError::Internal(_) => INTERNAL_ERROR,
    };
    (code, format!("{e:#}"))
}

fn params<T: DeserializeOwned>(method: &str, params: Value) -> Result<T, (i64, String)> {
    let params = if params.is_null() { json!({}) } else { params };
    serde_json::from_value(params)
        .map_err(|e| (INVALID_PARAMS, format!("bad params for {method}: {e}")))
}

fn no_params(method: &str, params: &Value) -> Result<(), (i64, String)> {
    match params {
        Value::Null => Ok(()),
        Value::Object(o) if o.is_empty() => Ok(()),
        Value::Array(a) if a.is_empty() => Ok(()),
        _ => Err((INVALID_PARAMS, format!("{method} takes no params"))),
    }
}

fn to_value<T: serde::Serialize>(value: T) -> Outcome {
    serde_json::to_value(value).map_err(|e| (INTERNAL_ERROR, e.to_string()))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameParams {
    name: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddrParams {
    addr: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContactAddParams {
    code: String,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupCreateParams {
    name: String,
    #[serde(default)]
    members: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupMemberParams {
    group: String,
    member: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupParams {
    group: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PeerParams {
    peer_id: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SendParams {
    to: String,
    text: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MessagesParams {
    chat: String,
    limit: Option<usize>,
    before: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChatParams {
    chat: String,
}

/// Every method of the API, in its order.
pub const METHODS: &[&str] = &[
    "identity",
    "set_name",
    "connect",
    "peers",
    "relays",
    "find_peer",
    "group_create",
    "group_add",
    "group_remove",
    "group_leave",
    "group_members",
    "nearby",
    "contact_add",
    "contact_accept",
    "contact_refuse",
    "contacts",
    "safety_number",
    "contact_verify",
    "send",
    "chats",
    "messages",
    "mark_read",
    "shutdown",
];

async fn dispatch(node: &Node, method: &str, raw: Value) -> Outcome {
    match method {
        "identity" => {
            no_params(method, &raw)?;
            to_value(node.identity().await.map_err(node_error)?)
        }
        "set_name" => {
            let p: NameParams = params(method, raw)?;
            node.set_name(&p.name).await.map_err(node_error)?;
            Ok(Value::Null)
        }
        "connect" => {
            let p: AddrParams = params(method, raw)?;
            let peer = node.connect(&p.addr).await.map_err(node_error)?;
            Ok(json!({"peer_id": peer.to_string()}))
        }
        "peers" => {
            no_params(method, &raw)?;
            to_value(node.peers().await.map_err(node_error)?)
        }
        "relays" => {
            no_params(method, &raw)?;
            to_value(node.relays().await.map_err(node_error)?)
        }
        "group_create" => {
            let p: GroupCreateParams = params(method, raw)?;
            let id = node
                .group_create(&p.name, &p.members)
                .await
                .map_err(node_error)?;
            Ok(json!({"group_id": id}))
        }
        "group_add" | "group_remove" => {
            let p: GroupMemberParams = params(method, raw)?;
            let result = if method == "group_add" {
                node.group_add(&p.group, &p.member).await
            } else {
                node.group_remove(&p.group, &p.member).await
            };
            result.map_err(node_error)?;
            Ok(Value::Null)
        }
        "group_leave" => {
            let p: GroupParams = params(method, raw)?;
            node.group_leave(&p.group).await.map_err(node_error)?;
            Ok(Value::Null)
        }
        "group_members" => {
            let p: GroupParams = params(method, raw)?;
            let members = node.group_members(&p.group).await.map_err(node_error)?;
            Ok(json!(members))
        }
        "find_peer" => {
            let p: PeerParams = params(method, raw)?;
            let addrs = node.find_peer(&p.peer_id).await.map_err(node_error)?;
            Ok(json!({"peer_id": p.peer_id, "addrs": addrs}))
        }
        "nearby" => {
            no_params(method, &raw)?;
            to_value(node.nearby().await.map_err(node_error)?)
        }
        "contact_add" => {
            let p: ContactAddParams = params(method, raw)?;
            let peer = node
                .contact_add(&p.code, p.name.as_deref())
                .await
                .map_err(node_error)?;
            Ok(json!({"peer_id": peer.to_string()}))
        }
        "contact_accept" => {
            let p: PeerParams = params(method, raw)?;
            node.contact_accept(&p.peer_id).await.map_err(node_error)?;
            Ok(Value::Null)
        }
        "contact_refuse" => {
            let p: PeerParams = params(method, raw)?;
            node.contact_refuse(&p.peer_id).await.map_err(node_error)?;
            Ok(Value::Null)
        }
        "contacts" => {
            no_params(method, &raw)?;
            to_value(node.contacts().await.map_err(node_error)?)
        }
        "safety_number" => {
            let p: PeerParams = params(method, raw)?;
            let number = node.safety_number(&p.peer_id).await.map_err(node_error)?;
            Ok(json!({"safety_number": number}))
        }
        "contact_verify" => {
            let p: PeerParams = params(method, raw)?;
            node.contact_verify(&p.peer_id).await.map_err(node_error)?;
            Ok(Value::Null)
        }
        "send" => {
            let p: SendParams = params(method, raw)?;
            let id = node.send(&p.to, &p.text).await.map_err(node_error)?;
            Ok(json!({"id": id.to_hex()}))
        }
        "chats" => {
            no_params(method, &raw)?;
            to_value(node.chats().await.map_err(node_error)?)
        }
        "messages" => {
            let p: MessagesParams = params(method, raw)?;
            to_value(
                node.messages(&p.chat, p.limit, p.before.as_deref())
                    .await
                    .map_err(node_error)?,
            )
        }
        "mark_read" => {
            let p: ChatParams = params(method, raw)?;
            node.mark_read(&p.chat).await.map_err(node_error)?;
            Ok(Value::Null)
        }
        "shutdown" => {
            no_params(method, &raw)?;
            node.shutdown().await.map_err(node_error)?;
            Ok(Value::Null)
        }
        other => Err((
            METHOD_NOT_FOUND,
            format!(
                "unknown method {other:?}; methods are: {}",
                METHODS.join(", ")
            ),
        )),
    }
}

/// The `params` object of an event notification: `{"kind": …, …}`.
pub fn event_json(event: &Event) -> Value {
    match event {
        Event::MessageReceived { chat, message } => json!({
            "kind": "message_received",
            "chat": chat,
            "message": crate::node::MessageInfo::from(message),
        }),
        Event::MessageStatus { id, chat, status } => json!({
            "kind": "message_status", "id": id, "chat": chat, "status": status.as_str(),
        }),
        Event::PeerConnected { peer_id, via } => json!({
            "kind": "peer_connected", "peer_id": peer_id, "via": via,
        }),
        Event::PeerDisconnected { peer_id } => json!({
            "kind": "peer_disconnected", "peer_id": peer_id,
        }),
        Event::PeerDiscovered { peer_id, source } => json!({
            "kind": "peer_discovered", "peer_id": peer_id, "source": source,
        }),
        Event::ContactRequest { peer_id, name } => json!({
            "kind": "contact_request", "peer_id": peer_id, "name": name,
        }),
        Event::Reachability { status, addr } => json!({
            "kind": "reachability", "status": status, "addr": addr,
        }),
        Event::RelayReservation { peer_id, reserved } => json!({
            "kind": "relay_reservation", "peer_id": peer_id, "reserved": reserved,
        }),
        Event::AddressesPublished { addrs } => json!({
            "kind": "addresses_published", "addrs": addrs,
        }),
        Event::HolePunch { peer_id, direct } => json!({
            "kind": "hole_punch", "peer_id": peer_id, "direct": direct,
        }),
        Event::MessagesMissing { chat, missing } => json!({
            "kind": "messages_missing", "chat": chat, "missing": missing,
        }),
        Event::GroupChanged { group } => json!({"kind": "group_changed", "group": group}),
        Event::Lagged { missed } => json!({"kind": "lagged", "missed": missed}),
    }
}

/// A whole notification line for an event.
pub fn event_notification(event: &Event) -> String {
    json!({"jsonrpc": "2.0", "method": "event", "params": event_json(event)}).to_string()
}

#[cfg(test)]
mod tests {
    use libp2p::PeerId;

    use super::*;
    use crate::crypto::group::GroupId;
    use crate::node::Config;

    fn stranger() -> PeerId {
        let key = libp2p::identity::Keypair::ed25519_from_bytes([9; 32]).expect("a valid key");
        key.public().to_peer_id()
    }

    /// A node on loopback, without mDNS, dialling nobody.
    async fn alice(dir: &std::path::Path) -> Node {
        let mut config = Config::new(dir);
        config.mdns = false;
        config.dial_on_start = false;
        config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("a multiaddr")];
        Node::start(config).await.expect("alice starts")
    }

    async fn error_of(node: &Node, method: &str, params: Value) -> (i64, String) {
        let request = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let text = call(node, &request.to_string())
            .await
            .json
            .expect("a response");
        let response: Value = serde_json::from_str(&text).expect("JSON");
        let error = &response["error"];
        assert!(error.is_object(), "{method} should fail: {response}");
        (
            error["code"].as_i64().expect("a code"),
            error["message"].as_str().expect("a message").to_owned(),
        )
    }

    #[test]
    fn each_new_error_says_whose_fault_it_is() {
        let group = GroupId([0xcd; 32]);
        let cases = [
            (NodeError::NotAContact(stranger()), NOT_FOUND),
            (NodeError::NoSuchGroup(group), NOT_FOUND),
            (NodeError::NotAMember(group), INVALID_PARAMS),
            (
                NodeError::Crypto("sealing message 00: noise".into()),
                INTERNAL_ERROR,
            ),
            (NodeError::Internal("no randomness".into()), INTERNAL_ERROR),
        ];
        for (error, code) in cases {
            let message = error.to_string();
            assert_eq!(node_error(error), (code, message));
        }
        assert_eq!(
            node_error(NodeError::NotAContact(stranger())).1,
            format!(
                "{} is not a contact; add them with their contact code first",
                stranger()
            )
        );
        assert_eq!(
            node_error(NodeError::NoSuchGroup(group)).1,
            format!(
                "no group {}; the chats list shows the groups you are in",
                "cd".repeat(32)
            )
        );
    }

    #[tokio::test]
    async fn send_names_the_stranger_the_unknown_group_and_the_garbage() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let node = alice(dir.path()).await;

        let to = stranger().to_string();
        let (code, message) = error_of(&node, "send", json!({"to": to, "text": "hi"})).await;
        assert_eq!(code, NOT_FOUND);
        assert_eq!(
            message,
            format!("{to} is not a contact; add them with their contact code first")
        );

        let group = "ef".repeat(32);
        let (code, message) = error_of(&node, "send", json!({"to": group, "text": "hi"})).await;
        assert_eq!(code, NOT_FOUND);
        assert!(message.contains(&group), "{message}");

        let (code, message) = error_of(&node, "send", json!({"to": "bob", "text": "hi"})).await;
        assert_eq!(code, INVALID_PARAMS);
        assert_eq!(
            message,
            "\"bob\" is neither a peer id (12D3Koo…) nor a group id (64 hex digits)"
        );

        let (code, _) = error_of(&node, "messages", json!({"chat": "bob"})).await;
        assert_eq!(code, INVALID_PARAMS);

        node.shutdown().await.expect("alice stops");
    }
}
