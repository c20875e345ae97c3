//! The command line: every command, flag and argument, each with its help
//! text (a test below checks none is missing), and the exit statuses.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// The exit statuses, shown at the end of `--help`; README.md lists them too.
const EXIT_STATUS: &str = "\
Exit status:
  0  done
  1  failure (local files, a damaged store, a server fault)
  2  usage: wrong arguments or input
  3  not found: no such user, or no account in the home
  4  refused: by the server (wrong code, rate limit, key not accepted…) or at a prompt
  5  unreachable: no server answered, or the connection was lost
  6  key changed: a contact's or the server's key is not the pinned or given one
  7  sent, but cut short: some devices did not get it (named; do not send it again)";

/// Carrier: end-to-end-encrypted store-and-forward messaging.
#[derive(Parser)]
#[command(name = "carrier", version, about, after_help = EXIT_STATUS)]
pub struct Args {
    /// Server address, HOST:PORT [default: the server this home registered
    /// on, else 127.0.0.1:5000].
    #[arg(long, env = "CARRIER_SERVER", global = true, value_name = "HOST:PORT")]
    pub server: Option<String>,
    /// Expected fingerprint of the server's key (otherwise pinned on first use).
    #[arg(
        long,
        env = "CARRIER_SERVER_FINGERPRINT",
        global = true,
        value_name = "FP"
    )]
    pub server_fingerprint: Option<String>,
    /// Directory holding your key, account, contacts and history
    /// [default: the platform's data directory].
    #[arg(long, env = "CARRIER_HOME", global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Passphrase protecting your key file (prefer the environment variable).
    #[arg(
        long,
        env = "CARRIER_PASSPHRASE",
        hide_env_values = true,
        global = true
    )]
    pub passphrase: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// `--json`: for scripts.
#[derive(clap::Args, Clone, Copy)]
pub struct Json {
    /// Print JSON, one object per line; strings are exact (README: "Output for scripts").
    #[arg(long)]
    pub json: bool,
}

#[derive(Subcommand)]
pub enum Command {
    /// Register a phone number: makes your key, then asks for the code the
    /// server sent (again after a wrong one). The home remembers the server.
    Register {
        /// Your phone number in international form, e.g. +12025550101.
        phone: String,
        /// The kind of key to make (a home that has a key keeps it).
        #[arg(long, value_enum, default_value = "p256")]
        key_type: KeyTypeArg,
        #[command(flatten)]
        out: Json,
    },
    /// Send an encrypted message (the text is read from standard input when omitted).
    Send {
        /// The recipient's phone number.
        phone: String,
        /// The message; words are joined with spaces.
        text: Vec<String>,
        #[command(flatten)]
        out: Json,
    },
    /// Receive waiting messages, store them, then acknowledge them.
    Fetch {
        #[command(flatten)]
        out: Json,
    },
    /// Print your phone number, key fingerprint and this home's device id.
    Whoami {
        #[command(flatten)]
        out: Json,
    },
    /// Print a contact's key fingerprint: the pinned one and, after a key
    /// change, the one the server reports now.
    Fingerprint {
        /// The contact's phone number.
        phone: String,
        #[command(flatten)]
        out: Json,
    },
    /// Accept a contact's new key after checking its fingerprint with them.
    Trust {
        /// The contact's phone number.
        phone: String,
        /// Pin the key only if it has this fingerprint (as the contact read
        /// it to you); without it, the fingerprint is shown and, on a
        /// terminal, you are asked.
        #[arg(long, value_name = "FP")]
        fingerprint: Option<String>,
        #[command(flatten)]
        out: Json,
    },
    /// Send a signed public message to every connected user of the neighbourhood.
    Broadcast {
        /// The message; words are joined with spaces (standard input when omitted).
        text: Vec<String>,
        #[command(flatten)]
        out: Json,
    },
    /// The users of the neighbourhood: phone, key fingerprint, home server, online or offline.
    List {
        #[command(flatten)]
        out: Json,
    },
    /// This account's devices (id, name, key fingerprint, added, last
    /// seen; this one marked); `add` and `remove` manage them.
    Devices {
        #[command(subcommand)]
        action: Option<DevicesAction>,
        #[command(flatten)]
        out: Json,
    },
    /// Make this (empty) home a new device of an account, with the code
    /// `carrier devices add` printed on one of its devices.
    Link {
        /// The account's phone number.
        phone: String,
        /// The link code, e.g. abcde-fghij-klmno-pqrst-uvwxya.
        code: String,
        /// A name for this device, shown to the account's contacts.
        #[arg(long, default_value = "linked device")]
        name: String,
    },
    /// The 60-digit safety number of your account and a contact's, to
    /// compare with them in person: the same on both sides.
    SafetyNumber {
        /// The contact's phone number.
        phone: String,
        #[command(flatten)]
        out: Json,
    },
    /// Print the stored conversation.
    History {
        #[command(flatten)]
        out: Json,
    },
    /// Interactive session: send, broadcast, fetch, list, /help, quit;
    /// incoming messages appear live.
    Chat,
    /// Print a shell completion script, e.g. `carrier completions bash >
    /// ~/.local/share/bash-completion/completions/carrier`.
    Completions {
        /// The shell to complete for.
        shell: ShellArg,
    },
    /// Print the manual page (roff), or write one per command into a directory.
    Man {
        /// Write carrier.1 and carrier-<command>.1 here instead.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
pub enum DevicesAction {
    /// Print a link code, then wait (up to 10 minutes) for a new device to
    /// use it with `carrier link`.
    Add,
    /// Remove a device from the account: it gets no more messages.
    Remove {
        /// The device's id, as `carrier devices` shows it.
        id: u32,
    },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum KeyTypeArg {
    /// ECDSA and ECDH on NIST P-256 (small and fast).
    P256,
    /// RSA-3072.
    Rsa,
}

#[derive(Clone, Copy, ValueEnum)]
pub enum ShellArg {
    /// GNU Bash.
    Bash,
    /// Z shell.
    Zsh,
    /// The friendly interactive shell.
    Fish,
    /// Elvish.
    Elvish,
    /// PowerShell.
    #[value(name = "powershell")]
    PowerShell,
}

impl From<ShellArg> for clap_complete::Shell {
    fn from(s: ShellArg) -> Self {
        match s {
            ShellArg::Bash => Self::Bash,
            ShellArg::Zsh => Self::Zsh,
            ShellArg::Fish => Self::Fish,
            ShellArg::Elvish => Self::Elvish,
            ShellArg::PowerShell => Self::PowerShell,
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::Args;

    /// Every command, argument and value has help text, at every level.
    #[test]
    fn every_help_entry_has_text() {
        let mut missing = Vec::new();
        let mut todo = vec![(String::from("carrier"), Args::command())];
        while let Some((path, mut cmd)) = todo.pop() {
            cmd.build();
            if cmd.get_about().is_none() {
                missing.push(path.clone());
            }
            for arg in cmd.get_arguments() {
                if arg.get_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
                for value in arg.get_possible_values() {
                    if value.get_help().is_none() && !value.is_hide_set() {
                        missing.push(format!("{path} {} {}", arg.get_id(), value.get_name()));
                    }
                }
            }
            for sub in cmd.get_subcommands() {
                todo.push((format!("{path} {}", sub.get_name()), sub.clone()));
            }
        }
        assert!(missing.is_empty(), "no help text: {missing:?}");
    }

    #[test]
    fn the_command_line_is_consistent() {
        Args::command().debug_assert();
    }
}
