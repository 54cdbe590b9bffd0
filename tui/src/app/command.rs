//! Slash commands typed in the composer: parsing and Tab completion.

/// Every slash command, with its argument hint and what it does (shown in help).
pub const COMMANDS: &[(&str, &str, &str)] = &[
    (
        "/add",
        "CODE [NAME]",
        "add a contact from their code and open the chat",
    ),
    ("/nick", "NAME", "change the name others see"),
    (
        "/verify",
        "",
        "compare safety numbers with the open chat's contact",
    ),
    (
        "/connect",
        "MULTIADDR",
        "dial a peer or relay by address (/ip4/…/tcp/…/p2p/…)",
    ),
    (
        "/group",
        "NAME",
        "start a group chat (then /invite people into it)",
    ),
    (
        "/invite",
        "CONTACT",
        "add a contact (name or peer id) to the open group",
    ),
    ("/leave", "", "leave the open group"),
    ("/code", "", "show your contact code and its QR code"),
    ("/nearby", "", "show people found on the LAN"),
    ("/help", "", "list every key and command"),
    ("/quit", "", "leave Bonghwa"),
];

/// A parsed slash command.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `/add CODE [NAME]`.
    Add {
        /// The contact code.
        code: String,
        /// An optional local name for them.
        alias: Option<String>,
    },
    /// `/nick NAME`.
    Nick(String),
    /// `/verify`.
    Verify,
    /// `/connect MULTIADDR`.
    Connect(String),
    /// `/group NAME`.
    Group(String),
    /// `/invite CONTACT`.
    Invite(String),
    /// `/leave`.
    Leave,
    /// `/code`.
    Code,
    /// `/nearby`.
    Nearby,
    /// `/help`.
    Help,
    /// `/quit`.
    Quit,
}

/// Parses a line that starts with `/`. The error says what is wrong, for the notice line.
pub fn parse(line: &str) -> Result<Command, String> {
    let line = line.trim();
    let (name, rest) = line
        .split_once(char::is_whitespace)
        .map_or((line, ""), |(n, r)| (n, r.trim()));
    match name {
        "/add" => {
            let mut words = rest.split_whitespace();
            let code = words
                .next()
                .ok_or("usage: /add CODE [NAME] (paste the code someone gave you)")?;
            let alias: Vec<&str> = words.collect();
            let alias = (!alias.is_empty()).then(|| alias.join(" "));
            Ok(Command::Add {
                code: code.to_owned(),
                alias,
            })
        }
        "/nick" if rest.is_empty() => Err("usage: /nick NAME".into()),
        "/nick" => Ok(Command::Nick(rest.to_owned())),
        "/verify" => Ok(Command::Verify),
        "/connect" if rest.is_empty() => Err("usage: /connect MULTIADDR".into()),
        "/connect" => Ok(Command::Connect(rest.to_owned())),
        "/group" if rest.is_empty() => Err("usage: /group NAME".into()),
        "/group" => Ok(Command::Group(rest.to_owned())),
        "/invite" if rest.is_empty() => Err("usage: /invite CONTACT (a name or a peer id)".into()),
        "/invite" => Ok(Command::Invite(rest.to_owned())),
        "/leave" => Ok(Command::Leave),
        "/code" => Ok(Command::Code),
        "/nearby" => Ok(Command::Nearby),
        "/help" => Ok(Command::Help),
        "/quit" | "/q" => Ok(Command::Quit),
        other => Err(format!(
            "unknown command {other}; type / and press Tab to see the commands"
        )),
    }
}

/// Commands whose name starts with what is typed (the text before any space).
pub fn matches(typed: &str) -> Vec<&'static str> {
    if !typed.starts_with('/') || typed.contains(char::is_whitespace) {
        return Vec::new();
    }
    COMMANDS
        .iter()
        .map(|(name, _, _)| *name)
        .filter(|name| name.starts_with(typed))
        .collect()
}

/// What Tab turns `typed` into: the only match completed with a space, the next match
/// after an exact one (cycling), or the longest common prefix of several; `None` if
/// nothing matches.
pub fn complete(typed: &str) -> Option<String> {
    if let Some(index) = COMMANDS.iter().position(|(name, _, _)| *name == typed) {
        // An exact name: cycle to the next command, so Tab walks through them all.
        let next = COMMANDS[(index + 1) % COMMANDS.len()].0;
        return Some(next.to_owned());
    }
    let found = matches(typed);
    match found.as_slice() {
        [] => None,
        [only] => Some(format!("{only} ")),
        [first, rest @ ..] => {
            let common = rest.iter().fold(first.len(), |len, other| {
                first
                    .bytes()
                    .zip(other.bytes())
                    .take(len)
                    .take_while(|(a, b)| a == b)
                    .count()
            });
            if common > typed.len() {
                Some(first[..common].to_owned())
            } else {
                Some((*first).to_owned())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_command() {
        assert_eq!(
            parse("/add BH1ABC Kim Min-ji"),
            Ok(Command::Add {
                code: "BH1ABC".into(),
                alias: Some("Kim Min-ji".into())
            })
        );
        assert_eq!(
            parse("/add BH1ABC"),
            Ok(Command::Add {
                code: "BH1ABC".into(),
                alias: None
            })
        );
        assert_eq!(parse("/nick 민지"), Ok(Command::Nick("민지".into())));
        assert_eq!(parse("/verify"), Ok(Command::Verify));
        assert_eq!(parse("/quit"), Ok(Command::Quit));
        assert_eq!(parse("/help"), Ok(Command::Help));
        assert_eq!(parse("/code"), Ok(Command::Code));
        assert_eq!(parse("/group 가족"), Ok(Command::Group("가족".into())));
        assert_eq!(parse("/invite 민지"), Ok(Command::Invite("민지".into())));
        assert_eq!(parse("/leave"), Ok(Command::Leave));
        assert!(parse("/group").is_err());
        assert!(parse("/invite").is_err());
        assert_eq!(parse("/nearby"), Ok(Command::Nearby));
        assert_eq!(
            parse("/connect /ip4/127.0.0.1/tcp/1"),
            Ok(Command::Connect("/ip4/127.0.0.1/tcp/1".into()))
        );
    }

    #[test]
    fn bad_commands_say_what_to_do() {
        assert!(parse("/add").unwrap_err().contains("usage: /add"));
        assert!(parse("/nick   ").unwrap_err().contains("usage: /nick"));
        assert!(parse("/frobnicate").unwrap_err().contains("Tab"));
    }

    #[test]
    fn tab_completes_unique_prefixes_and_cycles_exact_names() {
        assert_eq!(complete("/v").as_deref(), Some("/verify "));
        assert_eq!(complete("/q").as_deref(), Some("/quit "));
        assert_eq!(complete("/c").as_deref(), Some("/co"), "common prefix");
        assert_eq!(complete("/add").as_deref(), Some("/nick"), "cycles");
        assert_eq!(complete("/quit").as_deref(), Some("/add"), "wraps around");
        assert_eq!(complete("/").as_deref(), Some("/add"));
        assert_eq!(complete("/co").as_deref(), Some("/connect"));
        assert_eq!(complete("/zz"), None);
        assert_eq!(matches("/n"), vec!["/nick", "/nearby"]);
        assert!(matches("/add x").is_empty());
    }
}
