/*
 * chat.c: the whole Bonghwa C API in one small program.
 *
 *   cc -I ffi/include ffi/examples/chat.c -L target/release -lbonghwa -pthread -o chat
 *   ./chat /tmp/alice                                   # prints alice's contact code
 *   ./chat /tmp/bob '<alice's code>' [/ip4/…/p2p/…]     # bob adds alice, then type lines
 *
 * It opens a node, starts an event thread that prints every event, adds a contact, sends
 * each line typed on stdin to that contact, and closes the node at end of input. A mobile
 * shell does the same: the event thread posts to the UI instead of printing, and calls
 * run on a background queue (every bh_* call except bh_string_free, bh_last_error and
 * bh_version may block).
 *
 * Real apps parse JSON with a JSON library; find_string() below is only for brevity.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bonghwa.h"

/* Prints why the last call failed. Every string the library returns is freed with
 * bh_string_free, this one included. */
static void print_error(const char *what) {
    char *error = bh_last_error();
    fprintf(stderr, "%s failed: %s\n", what, error ? error : "(no reason)");
    bh_string_free(error);
}

/* Sends one JSON-RPC request; returns the response (free it with bh_string_free) or NULL. */
static char *call(bh_node *node, const char *method, const char *params) {
    static int id = 0;
    char request[8192];
    snprintf(request, sizeof request, "{\"jsonrpc\":\"2.0\",\"id\":%d,\"method\":\"%s\",\"params\":%s}",
             ++id, method, params ? params : "{}");
    char *response = bh_call(node, request);
    if (response == NULL) print_error(method);                           /* bad handle */
    else if (strstr(response, "\"error\":")) fprintf(stderr, "%s: %s\n", method, response); /* RPC error */
    return response;
}

/* Copies the string value of "key" in json into out (no escapes handled: demo only). */
static int find_string(const char *json, const char *key, char *out, size_t cap) {
    char pattern[64];
    snprintf(pattern, sizeof pattern, "\"%s\":\"", key);
    const char *start = json ? strstr(json, pattern) : NULL;
    if (start == NULL) return 0;
    start += strlen(pattern);
    size_t len = strcspn(start, "\"");
    if (len >= cap) return 0;
    memcpy(out, start, len);
    out[len] = '\0';
    return 1;
}

/* The event thread: one per node, for the node's whole life. bh_next_event(node, -1)
 * blocks until an event arrives; it returns NULL once bh_node_close is called (from any
 * thread), which ends the loop. */
static void *event_thread(void *node) {
    char *event;
    while ((event = bh_next_event(node, -1)) != NULL) {
        printf("event: %s\n", event);   /* e.g. {"kind":"message_received","chat":…,"message":{…}} */
        bh_string_free(event);
    }
    return NULL;
}

/* Writes text as a JSON string body (quotes and backslashes escaped, controls dropped). */
static void json_escape(const char *text, char *out, size_t cap) {
    size_t n = 0;
    for (; *text && n + 2 < cap; text++) {
        if (*text == '"' || *text == '\\') out[n++] = '\\';
        if ((unsigned char)*text >= 0x20) out[n++] = *text;
    }
    out[n] = '\0';
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DATA_DIR [CONTACT_CODE [ADDR]]\n", argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    printf("bonghwa %s\n", bh_version());   /* static string: not freed */

    /* Open the node. NULL config means defaults: listen everywhere, find peers with mDNS. */
    bh_node *node = bh_node_open(argv[1], "{\"name\":\"c-example\"}");
    if (node == NULL) {
        print_error("bh_node_open");
        return 1;
    }
    pthread_t events;
    pthread_create(&events, NULL, event_thread, node);

    /* {"peer_id":…,"name":…,"contact_code":…,"addrs":[…]}: give the code to your contact. */
    char *me = call(node, "identity", NULL);
    printf("me: %s\n", me ? me : "?");
    bh_string_free(me);

    char peer[128] = "", params[8192];
    if (argc >= 3) {
        /* Add the contact from their code; the result carries their peer id, which is also
         * the id of our chat with them. */
        snprintf(params, sizeof params, "{\"code\":\"%s\"}", argv[2]);
        char *added = call(node, "contact_add", params);
        find_string(added, "peer_id", peer, sizeof peer);
        bh_string_free(added);
    }
    if (argc >= 4) {
        /* Optional: dial them directly (otherwise mDNS or relays find them). */
        snprintf(params, sizeof params, "{\"addr\":\"%s\"}", argv[3]);
        bh_string_free(call(node, "connect", params));
    }

    /* Each line typed is a message; the event thread prints message_status events as it
     * goes sent → delivered, and message_received when they answer. */
    char line[2048], text[4096];
    while (peer[0] && fgets(line, sizeof line, stdin)) {
        line[strcspn(line, "\n")] = '\0';
        json_escape(line, text, sizeof text);
        snprintf(params, sizeof params, "{\"to\":\"%s\",\"text\":\"%s\"}", peer, text);
        bh_string_free(call(node, "send", params));   /* {"result":{"id":"<message id>"}} */
    }
    if (!peer[0]) {
        printf("no contact given: printing events until end of input (Ctrl-D)\n");
        while (fgets(line, sizeof line, stdin)) {}
    }

    /* Close: flushes, stops the node and wakes the event thread, which then ends. */
    bh_node_close(node);
    pthread_join(events, NULL);
    return 0;
}
