/*
 * two_nodes.c: the C ABI exercised the way a mobile shell uses it.
 *
 * Two nodes in one process on loopback exchange messages both ways through bh_call and
 * bh_next_event, then close cleanly; a closed node's data is reopened to check the close
 * flushed it. Around that, hostile calls: NULL everywhere, garbage and invalid UTF-8,
 * pointers that are not nodes, double close, calls after close, double free.
 *
 * Usage: two_nodes DATA_ROOT   (an empty directory; nodes live in DATA_ROOT/alice, /bob)
 * Exit status 0 only when every check passed. Run by ffi/tests/c_abi.rs, also under
 * valgrind. Never uses mDNS: the nodes listen on 127.0.0.1 and dial each other.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bonghwa.h"

#define CONFIG_ALICE "{\"name\":\"alice\",\"mdns\":false,\"listen\":[\"/ip4/127.0.0.1/tcp/0\"]}"
#define CONFIG_BOB "{\"name\":\"bob\",\"mdns\":false,\"listen\":[\"/ip4/127.0.0.1/tcp/0\"]}"

/* Waiting for an event: up to MAX_WAITS calls of bh_next_event with WAIT_MS each. Generous
 * so that a slow machine or valgrind does not fail the run; a healthy run returns early. */
#define MAX_WAITS 600
#define WAIT_MS 500

static void fail(int line, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    fprintf(stderr, "two_nodes.c:%d: FAILED: ", line);
    vfprintf(stderr, fmt, args);
    fputc('\n', stderr);
    va_end(args);
    exit(1);
}

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) fail(__LINE__, __VA_ARGS__);                                                  \
    } while (0)

/* True when this thread's last error exists and contains `needle`. */
static bool last_error_contains(const char *needle) {
    char *error = bh_last_error();
    bool found = error != NULL && strstr(error, needle) != NULL;
    if (!found) fprintf(stderr, "  last error: %s (wanted \"%s\")\n", error ? error : "(none)", needle);
    bh_string_free(error);
    return found;
}

static bool no_last_error(void) {
    char *error = bh_last_error();
    if (error != NULL) fprintf(stderr, "  unexpected last error: %s\n", error);
    bh_string_free(error);
    return error == NULL;
}

/* Sends one request; returns the response (caller frees) after checking it is not NULL. */
static char *call(bh_node *node, const char *request) {
    char *response = bh_call(node, request);
    CHECK(response != NULL, "bh_call returned NULL for %s", request);
    return response;
}

/* Calls `method` with `params` (a JSON object, or NULL) and checks the call succeeded. */
static char *rpc_ok(bh_node *node, const char *method, const char *params) {
    static int next_id = 1;
    char request[4096];
    snprintf(request, sizeof request, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\"%s%s}",
             next_id++, method, params ? ",\"params\":" : "", params ? params : "");
    char *response = call(node, request);
    CHECK(strstr(response, "\"result\":") != NULL && strstr(response, "\"error\":") == NULL,
          "%s failed: %s", method, response);
    return response;
}

/* Checks that `response` is a JSON-RPC error with `code`, then frees it. */
static void expect_rpc_error(char *response, const char *code, const char *what) {
    CHECK(response != NULL, "%s: bh_call returned NULL", what);
    CHECK(strstr(response, "\"error\":") != NULL && strstr(response, code) != NULL,
          "%s: expected error %s, got %s", what, code, response);
    bh_string_free(response);
}

/* Copies the string value of the first "key":"…" in `json` into `out`. Enough for the
 * ids, codes and addresses here (they contain no escapes); an app uses a JSON library. */
static void json_string(const char *json, const char *key, char *out, size_t cap) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *start = strstr(json, pattern);
    CHECK(start != NULL, "no \"%s\" in %s", key, json);
    start += strlen(pattern);
    const char *end = strchr(start, '"');
    CHECK(end != NULL && (size_t)(end - start) < cap, "bad \"%s\" in %s", key, json);
    memcpy(out, start, (size_t)(end - start));
    out[end - start] = '\0';
}

/* Waits for an event containing every needle (NULL-terminated list), skipping others. */
static void wait_event(bh_node *node, const char *who, ...) {
    const char *needles[8];
    size_t count = 0;
    va_list args;
    va_start(args, who);
    for (const char *n = va_arg(args, const char *); n != NULL && count < 8; n = va_arg(args, const char *))
        needles[count++] = n;
    va_end(args);
    for (int i = 0; i < MAX_WAITS; i++) {
        char *event = bh_next_event(node, WAIT_MS);
        if (event == NULL) {
            CHECK(no_last_error(), "%s: bh_next_event failed while waiting for %s", who, needles[0]);
            continue; /* a timeout: keep waiting, up to MAX_WAITS */
        }
        bool all = true;
        for (size_t k = 0; k < count; k++) all = all && strstr(event, needles[k]) != NULL;
        printf("%s event: %s%s\n", who, event, all ? "" : " (not the one awaited)");
        bh_string_free(event);
        if (all) return;
    }
    fail(__LINE__, "%s: no event with %s after %d waits of %d ms", who, needles[0], MAX_WAITS, WAIT_MS);
}

static void path_join(char *out, size_t cap, const char *root, const char *name) {
    int n = snprintf(out, cap, "%s/%s", root, name);
    CHECK(n > 0 && (size_t)n < cap, "path too long");
}

/* Hostile calls that need no node. */
static void hostile_without_node(const char *root) {
    char dir[4096];
    path_join(dir, sizeof dir, root, "hostile");
    int not_a_node = 0;
    char stack_string[] = "not from the library";

    const char *version = bh_version();
    CHECK(version != NULL && version[0] != '\0', "bh_version is empty");
    CHECK(no_last_error(), "a fresh thread has a last error");

    CHECK(bh_node_open(NULL, NULL) == NULL, "open(NULL) succeeded");
    CHECK(last_error_contains("data_dir is NULL"), "open(NULL): wrong error");
    CHECK(bh_node_open(dir, "{\"mDNS\":false}") == NULL, "an unknown config key was accepted");
    CHECK(last_error_contains("unknown field `mDNS`"), "unknown key: wrong error");
    CHECK(bh_node_open(dir, "{\"mdns\":") == NULL, "truncated config JSON was accepted");
    CHECK(last_error_contains("invalid JSON"), "bad config JSON: wrong error");
    CHECK(bh_node_open(dir, "[]") == NULL, "a config array was accepted");
    CHECK(last_error_contains("not an object"), "config array: wrong error");
    CHECK(bh_node_open(dir, "{\"listen\":[\"nowhere\"]}") == NULL, "a bad multiaddr was accepted");
    CHECK(last_error_contains("is not a multiaddr"), "bad multiaddr: wrong error");
    CHECK(bh_node_open("\xff\xfe/x", NULL) == NULL, "a non-UTF-8 data_dir was accepted");
    CHECK(last_error_contains("data_dir is not valid UTF-8"), "non-UTF-8 dir: wrong error");
    CHECK(bh_node_open(dir, "{\"name\":\"\xc3\x28\"}") == NULL, "non-UTF-8 config was accepted");
    CHECK(last_error_contains("config_json is not valid UTF-8"), "non-UTF-8 config: wrong error");

    CHECK(bh_call(NULL, NULL) == NULL, "call(NULL, NULL) answered");
    CHECK(last_error_contains("node is NULL"), "call(NULL): wrong error");
    CHECK(bh_call(NULL, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"identity\"}") == NULL, "call(NULL node) answered");
    CHECK(bh_call((bh_node *)&not_a_node, "{}") == NULL, "a stack address was taken for a node");
    CHECK(last_error_contains("not a node handle"), "call(garbage): wrong error");
    CHECK(bh_next_event(NULL, -1) == NULL, "next_event(NULL) returned an event");
    CHECK(last_error_contains("node is NULL"), "next_event(NULL): wrong error");
    CHECK(bh_next_event((bh_node *)stack_string, 0) == NULL, "next_event(garbage) returned an event");
    CHECK(last_error_contains("not a node handle"), "next_event(garbage): wrong error");
    bh_node_close(NULL);
    CHECK(last_error_contains("node is NULL"), "close(NULL): wrong error");
    bh_node_close((bh_node *)&not_a_node);
    CHECK(last_error_contains("not a node handle"), "close(garbage): wrong error");

    bh_string_free(NULL);
    bh_string_free(stack_string);
    CHECK(last_error_contains("not returned by this library"), "freeing a stack string: wrong error");
    CHECK(strcmp(stack_string, "not from the library") == 0, "a foreign string was touched");
    bh_string_free((char *)version);
    CHECK(last_error_contains("not returned by this library"), "freeing bh_version: wrong error");
}

/* Hostile requests to a live node: each gets a JSON-RPC error, or NULL for a NULL request. */
static void hostile_with_node(bh_node *node) {
    CHECK(bh_call(node, NULL) == NULL, "a NULL request was answered");
    CHECK(last_error_contains("request_json is NULL"), "NULL request: wrong error");
    expect_rpc_error(bh_call(node, ""), "-32700", "empty request");
    expect_rpc_error(bh_call(node, "{\"jsonrpc\":\"2.0\",\"id\":1,"), "-32700", "truncated JSON");
    expect_rpc_error(bh_call(node, "\xff\xfe\xfd"), "-32700", "invalid UTF-8");
    expect_rpc_error(bh_call(node, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"x\xc3\"}"), "-32700",
                     "invalid UTF-8 inside JSON");
    expect_rpc_error(bh_call(node, "[]"), "-32600", "empty batch");
    expect_rpc_error(bh_call(node, "42"), "-32600", "not an object");
    expect_rpc_error(bh_call(node, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"launch\"}"), "-32601",
                     "unknown method");
    expect_rpc_error(bh_call(node, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"send\",\"params\":{\"text\":1}}"),
                     "-32602", "bad params");

    /* 100 000 nested arrays: a parse error, not a stack overflow. */
    size_t depth = 100000;
    char *deep = malloc(2 * depth + 1);
    CHECK(deep != NULL, "out of memory");
    memset(deep, '[', depth);
    memset(deep + depth, ']', depth);
    deep[2 * depth] = '\0';
    expect_rpc_error(bh_call(node, deep), "-32700", "deeply nested JSON");
    free(deep);

    /* A notification (no id) has no response: the text null. */
    char *none = call(node, "{\"jsonrpc\":\"2.0\",\"method\":\"identity\"}");
    CHECK(strcmp(none, "null") == 0, "a notification got %s", none);
    bh_string_free(none);

    /* Double free of a returned string: refused, not a heap corruption. */
    char *twice = rpc_ok(node, "identity", NULL);
    bh_string_free(twice);
    bh_string_free(twice);
    CHECK(last_error_contains("already freed"), "double free: wrong error");
}

/* Several threads calling one node at once. */
static void *identity_caller(void *arg) {
    for (int i = 0; i < 20; i++) {
        char *response = bh_call((bh_node *)arg, "{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"identity\"}");
        if (response == NULL || strstr(response, "\"peer_id\"") == NULL) {
            bh_string_free(response);
            return "identity from a second thread failed";
        }
        bh_string_free(response);
    }
    return NULL;
}

/* The event thread of a shell: drains events until bh_next_event reports the close. */
struct event_thread {
    bh_node *node;
    pthread_mutex_t lock;
    pthread_cond_t started_cond;
    bool started;
    int events;
    bool ended_by_close;
};

static void *event_loop(void *arg) {
    struct event_thread *t = arg;
    pthread_mutex_lock(&t->lock);
    t->started = true;
    pthread_cond_signal(&t->started_cond);
    pthread_mutex_unlock(&t->lock);
    char *event;
    while ((event = bh_next_event(t->node, -1)) != NULL) {
        printf("alice event (event thread): %s\n", event);
        bh_string_free(event);
        t->events++;
    }
    t->ended_by_close = last_error_contains("closed");
    return NULL;
}

struct party {
    const char *name;
    bh_node *node;
    char peer_id[128];
    char code[1024];
    char addr[512];
};

static void load_identity(struct party *p) {
    char *identity = rpc_ok(p->node, "identity", NULL);
    json_string(identity, "peer_id", p->peer_id, sizeof p->peer_id);
    json_string(identity, "contact_code", p->code, sizeof p->code);
    /* The first listen address, already ending in /p2p/<peer id>. */
    const char *addr = strstr(identity, "\"addrs\":[\"");
    CHECK(addr != NULL, "no addrs in %s", identity);
    addr += strlen("\"addrs\":[\"");
    const char *end = strchr(addr, '"');
    CHECK(end != NULL && (size_t)(end - addr) < sizeof p->addr, "bad addrs in %s", identity);
    memcpy(p->addr, addr, (size_t)(end - addr));
    p->addr[end - addr] = '\0';
    bh_string_free(identity);
    printf("%s is %s at %s\n", p->name, p->peer_id, p->addr);
}

/* `from` sends `text` to `to`; waits until `to` receives it and `from` sees it delivered. */
static void send_and_wait(struct party *from, struct party *to, const char *text) {
    char params[1024], id[128], quoted[256], status_id[200], received_text[300];
    snprintf(params, sizeof params, "{\"to\":\"%s\",\"text\":\"%s\"}", to->peer_id, text);
    char *sent = rpc_ok(from->node, "send", params);
    json_string(sent, "id", id, sizeof id);
    bh_string_free(sent);
    snprintf(quoted, sizeof quoted, "\"chat\":\"%s\"", from->peer_id);
    snprintf(received_text, sizeof received_text, "\"text\":\"%s\"", text);
    wait_event(to->node, to->name, "\"kind\":\"message_received\"", quoted, received_text, (char *)NULL);
    snprintf(status_id, sizeof status_id, "\"id\":\"%s\"", id);
    wait_event(from->node, from->name, "\"kind\":\"message_status\"", status_id, "\"status\":\"delivered\"",
               (char *)NULL);
}

int main(int argc, char **argv) {
    CHECK(argc == 2, "usage: two_nodes DATA_ROOT");
    const char *root = argv[1];
    char alice_dir[4096], bob_dir[4096], params[2048];
    path_join(alice_dir, sizeof alice_dir, root, "alice");
    path_join(bob_dir, sizeof bob_dir, root, "bob");

    hostile_without_node(root);

    struct party alice = {.name = "alice"}, bob = {.name = "bob"};
    alice.node = bh_node_open(alice_dir, CONFIG_ALICE);
    CHECK(alice.node != NULL && no_last_error(), "opening alice failed");
    bob.node = bh_node_open(bob_dir, CONFIG_BOB);
    CHECK(bob.node != NULL, "opening bob failed");
    CHECK(bh_node_open(alice_dir, CONFIG_ALICE) == NULL, "alice's data dir opened twice");
    CHECK(last_error_contains("could not open the node"), "second open: wrong error");

    hostile_with_node(alice.node);
    load_identity(&alice);
    load_identity(&bob);

    /* Each adds the other from their contact code, then alice dials bob. */
    snprintf(params, sizeof params, "{\"code\":\"%s\",\"name\":\"Bob\"}", bob.code);
    bh_string_free(rpc_ok(alice.node, "contact_add", params));
    snprintf(params, sizeof params, "{\"code\":\"%s\",\"name\":\"Alice\"}", alice.code);
    bh_string_free(rpc_ok(bob.node, "contact_add", params));
    snprintf(params, sizeof params, "{\"addr\":\"%s\"}", bob.addr);
    char *connected = rpc_ok(alice.node, "connect", params);
    CHECK(strstr(connected, bob.peer_id) != NULL, "connect reached someone else: %s", connected);
    bh_string_free(connected);

    send_and_wait(&alice, &bob, "hello bob");
    send_and_wait(&bob, &alice, "hi alice");

    snprintf(params, sizeof params, "{\"chat\":\"%s\"}", alice.peer_id);
    char *history = rpc_ok(bob.node, "messages", params);
    CHECK(strstr(history, "hello bob") && strstr(history, "hi alice"), "bob's history: %s", history);
    bh_string_free(history);

    /* Calls from another thread while this one calls too. */
    pthread_t caller;
    CHECK(pthread_create(&caller, NULL, identity_caller, alice.node) == 0, "pthread_create");
    void *caller_error = NULL;
    for (int i = 0; i < 20; i++) bh_string_free(rpc_ok(alice.node, "contacts", NULL));
    pthread_join(caller, &caller_error);
    CHECK(caller_error == NULL, "%s", (const char *)caller_error);

    /* bob stops through the shutdown method: events end, calls get "node stopped". */
    bh_string_free(rpc_ok(bob.node, "shutdown", NULL));
    expect_rpc_error(bh_call(bob.node, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"identity\"}"), "-32001",
                     "identity after shutdown");
    char *late;
    while ((late = bh_next_event(bob.node, -1)) != NULL) bh_string_free(late);
    CHECK(last_error_contains("stopped"), "bob's events after shutdown: wrong error");
    bh_node_close(bob.node);
    CHECK(no_last_error(), "closing a stopped node failed");

    /* alice closes while her event thread waits: it wakes with NULL. */
    struct event_thread events = {.node = alice.node};
    pthread_mutex_init(&events.lock, NULL);
    pthread_cond_init(&events.started_cond, NULL);
    pthread_t event_thread;
    CHECK(pthread_create(&event_thread, NULL, event_loop, &events) == 0, "pthread_create");
    pthread_mutex_lock(&events.lock);
    while (!events.started) pthread_cond_wait(&events.started_cond, &events.lock);
    pthread_mutex_unlock(&events.lock);
    bh_node_close(alice.node);
    CHECK(no_last_error(), "closing alice failed");
    pthread_join(event_thread, NULL);
    CHECK(events.ended_by_close, "the event thread did not end with a 'closed' error");
    pthread_cond_destroy(&events.started_cond);
    pthread_mutex_destroy(&events.lock);

    /* After close: errors, never a crash. */
    CHECK(bh_call(alice.node, "{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"identity\"}") == NULL,
          "a closed node answered");
    CHECK(last_error_contains("closed"), "call after close: wrong error");
    CHECK(bh_next_event(alice.node, -1) == NULL, "a closed node gave an event");
    CHECK(last_error_contains("closed"), "next_event after close: wrong error");
    bh_node_close(alice.node);
    CHECK(last_error_contains("closed"), "double close: wrong error");
    bh_node_close(bob.node);
    CHECK(last_error_contains("closed"), "double close of a stopped node: wrong error");

    /* Close flushed: alice's history is there when she opens again. */
    bh_node *again = bh_node_open(alice_dir, CONFIG_ALICE);
    CHECK(again != NULL, "reopening alice failed");
    CHECK(again != alice.node, "a handle value was reused");
    snprintf(params, sizeof params, "{\"chat\":\"%s\"}", bob.peer_id);
    history = rpc_ok(again, "messages", params);
    CHECK(strstr(history, "hello bob") && strstr(history, "hi alice"), "alice's history: %s", history);
    bh_string_free(history);
    bh_node_close(again);
    CHECK(no_last_error(), "closing alice again failed");

    printf("two_nodes: all checks passed\n");
    return 0;
}
