//! Every key the UI answers to, in one table: the help panel is drawn from it, so help
//! cannot forget a key that exists.

/// `(where, keys, what they do)`, in the order help shows them.
pub const KEYS: &[(&str, &str, &str)] = &[
    ("anywhere", "Ctrl+C  Ctrl+Q", "quit"),
    (
        "anywhere",
        "F1",
        "help (also ? in the chat list or an empty composer)",
    ),
    (
        "anywhere",
        "Esc",
        "close the panel, clear the notice, or leave the composer",
    ),
    (
        "anywhere",
        "Alt+↑ Alt+↓  Ctrl+P Ctrl+N",
        "previous / next chat",
    ),
    ("anywhere", "PgUp PgDn  mouse wheel", "scroll the history"),
    (
        "anywhere",
        "Tab",
        "switch chat list / composer (completes /commands)",
    ),
    ("chat list", "↑ ↓  k j", "move between chats"),
    ("chat list", "Enter  i  →", "write in the selected chat"),
    ("chat list", "a", "add a contact by pasting their code"),
    ("chat list", "n", "nearby: people on this LAN"),
    ("chat list", "c", "your contact code and QR code"),
    ("chat list", "s", "safety number of the open chat (verify)"),
    (
        "chat list",
        "y",
        "accept the open contact request: they become a contact",
    ),
    (
        "chat list",
        "x",
        "refuse it: their chat goes, what they send later is dropped",
    ),
    ("chat list", "q", "quit"),
    ("composer", "Enter", "send (or run a /command)"),
    ("composer", "Alt+Enter  Ctrl+J", "new line"),
    (
        "composer",
        "↑ ↓",
        "move between lines; recall earlier texts at the edges",
    ),
    (
        "composer",
        "← →  Home End  Ctrl+A Ctrl+E",
        "move the cursor",
    ),
    (
        "composer",
        "Ctrl+W  Ctrl+U  Ctrl+K",
        "delete word / to line start / to line end",
    ),
    (
        "composer",
        "paste",
        "pasted text goes in as typed, new lines included",
    ),
    ("help", "↑ ↓  PgUp PgDn", "scroll this help"),
    ("add contact", "Enter  Esc", "add the pasted code / cancel"),
    (
        "add contact",
        "Enter again",
        "add anyway after a different-key warning",
    ),
    (
        "nearby",
        "↑ ↓  Enter a  r",
        "move / add the selected person / refresh",
    ),
    (
        "contact code",
        "t",
        "switch between the QR code and the text",
    ),
    ("safety number", "v  Enter", "mark the contact verified"),
];

/// How each delivery mark reads, for the help panel's legend.
pub const MARKS: &[(&str, &str)] = &[
    ("…", "pending: stored, waiting for a route"),
    ("✓", "sent: handed to the network"),
    ("✓✓", "delivered: the recipient has it"),
    ("✓✓ read", "read by the recipient"),
    ("✗ failed", "gave up after the retry time"),
];
