//! The contact book and the chat list: queries and decisions over the store. The actor
//! does what follows from them on the network (keep a contact's connections, dial it,
//! remember its addresses).

use std::collections::BTreeMap;

use libp2p::PeerId;

use super::{ChatInfo, ChatKind, ContactInfo, MessageInfo, NodeError, NodeResult};
use crate::identity::{self, ContactCard, Identity};
use crate::model::{Contact, ContactState, MessageId};
use crate::store::Store;

/// `contact_add`: adds (or accepts) the owner of `code`; a newer card replaces the one
/// held. Flushed before it returns.
pub(super) fn add(
    store: &dyn Store,
    me: &PeerId,
    code: &str,
    alias: Option<String>,
) -> NodeResult<PeerId> {
    let (card, prekey) = ContactCard::from_code_with_prekey(code)?;
    let peer = card.peer_id()?;
    if peer == *me {
        return Err(NodeError::InvalidArgument(
            "that is your own contact code".into(),
        ));
    }
    if let Some(alias) = &alias {
        identity::check_name(alias)?;
    }
    let key = peer.to_string();
    let contact = match store.contact(&key)? {
        Some(mut existing) => {
            if card.issued_ms >= existing.card.issued_ms {
                existing.card = card;
            }
            existing.state = ContactState::Accepted;
            if alias.is_some() {
                existing.alias = alias;
            }
            existing
        }
        None => Contact {
            peer_id: key,
            card,
            alias,
            verified: false,
            state: ContactState::Accepted,
        },
    };
    store.put_contact(&contact)?;
    if let Some(prekey) = prekey {
        super::sessions::keep_newer_prekey(store, &peer, &prekey)?;
    }
    Ok(peer)
}

/// Accepts or refuses a pending request (not yet flushed); false if it was accepted
/// already and nothing changed.
pub(super) fn decide(store: &dyn Store, peer: &PeerId, state: ContactState) -> NodeResult<bool> {
    let mut contact = known(store, peer)?;
    match (contact.state, state) {
        (ContactState::Accepted, ContactState::Accepted) => return Ok(false),
        (ContactState::Accepted, _) => {
            return Err(NodeError::InvalidArgument(format!(
                "{peer} is already a contact, not a request"
            )));
        }
        _ => {}
    }
    contact.state = state;
    store.put_contact(&contact)?;
    Ok(true)
}

/// `contacts`: accepted contacts, each with whether it is online.
pub(super) fn list(
    store: &dyn Store,
    online: impl Fn(&PeerId) -> bool,
) -> NodeResult<Vec<ContactInfo>> {
    Ok(store
        .contacts()?
        .into_iter()
        .filter(|c| c.state == ContactState::Accepted)
        .map(|c| ContactInfo {
            online: c.peer_id.parse().is_ok_and(|p| online(&p)),
            name: c.display_name().to_owned(),
            verified: c.verified,
            peer_id: c.peer_id,
        })
        .collect())
}

fn known(store: &dyn Store, peer: &PeerId) -> NodeResult<Contact> {
    store
        .contact(&peer.to_string())?
        .ok_or(NodeError::NotAContact(*peer))
}

/// `safety_number`: the 60 digits both sides compare.
pub(super) fn safety_number(
    store: &dyn Store,
    identity: &Identity,
    peer: &PeerId,
) -> NodeResult<String> {
    let contact = known(store, peer)?;
    Ok(identity::safety_number(
        &identity.public_key(),
        &contact.card.identity,
    ))
}

/// `contact_verify`: the user compared safety numbers. Flushed before it returns.
pub(super) fn verify(store: &dyn Store, peer: &PeerId) -> NodeResult<()> {
    let mut contact = known(store, peer)?;
    contact.verified = true;
    store.put_contact(&contact)?;
    store.flush()?;
    Ok(())
}

/// `chats`: direct chats and groups (`groups`: id and name of each), newest first.
pub(super) fn chats(store: &dyn Store, groups: Vec<(String, String)>) -> NodeResult<Vec<ChatInfo>> {
    let mut chats: Vec<ChatInfo> = Vec::new();
    let mut groups: BTreeMap<String, String> = groups.into_iter().collect();
    for (id, meta) in store.chats()? {
        if let Some(name) = groups.remove(&id) {
            chats.push(ChatInfo {
                name,
                request: false,
                kind: ChatKind::Group,
                unread: meta.unread,
                last: meta.last.as_ref().map(MessageInfo::from),
                id,
            });
            continue;
        }
        let contact = store.contact(&id)?;
        if contact
            .as_ref()
            .is_some_and(|c| c.state == ContactState::Refused)
        {
            continue;
        }
        chats.push(ChatInfo {
            name: contact
                .as_ref()
                .map_or_else(|| id.clone(), |c| c.display_name().to_owned()),
            request: contact.is_some_and(|c| c.state == ContactState::Request),
            kind: ChatKind::Direct,
            unread: meta.unread,
            last: meta.last.as_ref().map(MessageInfo::from),
            id,
        });
    }
    // Groups with no message yet.
    for (id, name) in groups {
        chats.push(ChatInfo {
            name,
            request: false,
            kind: ChatKind::Group,
            unread: 0,
            last: None,
            id,
        });
    }
    chats.sort_by(|a, b| {
        let key = |c: &ChatInfo| c.last.as_ref().map(|m| m.sent_at);
        key(b).cmp(&key(a)).then_with(|| a.id.cmp(&b.id))
    });
    Ok(chats)
}

/// `messages`: a page of a chat, oldest first, before message `before` if given.
pub(super) fn messages(
    store: &dyn Store,
    chat: &str,
    limit: usize,
    before: Option<MessageId>,
) -> NodeResult<Vec<MessageInfo>> {
    let before = match before {
        Some(id) => {
            let message = store
                .message(&id)?
                .ok_or_else(|| NodeError::NotFound(format!("no message with id {id}")))?;
            Some((message.hlc, message.id))
        }
        None => None,
    };
    Ok(store
        .messages(chat, limit, before)?
        .iter()
        .map(MessageInfo::from)
        .collect())
}
