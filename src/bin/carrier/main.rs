//! `carrier`: the command-line client. Parses arguments, opens the home,
//! calls the client library, and prints results: lines for people (text
//! from the network neutralised) or, with `--json`, one exact JSON object
//! per line. Errors are one line on standard error, and the exit status
//! says which kind of failure it was (`carrier --help` lists them).

mod args;
mod devices;
mod keys;

use std::io::{IsTerminal, Read, Write};
use std::sync::Arc;

use carrier::client::{self, Client, ClientError, Home, Notice, show};
use carrier::domain::{Fingerprint, PhoneNumber};
use clap::{CommandFactory, Parser};
use serde_json::json;
use zeroize::Zeroizing;

use args::{Args, Command, Json};

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // No log lines unless asked for with RUST_LOG: standard error carries
    // the command's own lines (errors, warnings, notices) for the user,
    // which say in its words whatever they need to know.
    carrier::telemetry::init(carrier::telemetry::CLIENT_FILTER);
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("{}", show::error(&e));
        std::process::exit(e.exit().code());
    }
}

async fn run(args: Args) -> Result<(), ClientError> {
    match args.command {
        Command::Completions { shell } => return completions(shell),
        Command::Man { ref out_dir } => return man(out_dir.as_deref()),
        _ => {}
    }
    let client = open_client(&args).await?;
    match args.command {
        Command::Register {
            phone,
            key_type,
            out,
        } => keys::register(&client, &phone, key_type, out).await,
        Command::Send { phone, text, out } => send(&client, &phone, text, out).await,
        Command::Fetch { out } => fetch(&client, out).await,
        Command::Whoami { out } => whoami(&client, out).await,
        Command::Devices { action, out } => devices::devices(&client, action, out).await,
        Command::Link { phone, code, name } => devices::link(&client, &phone, &code, &name).await,
        Command::SafetyNumber { phone, out } => devices::safety_number(&client, &phone, out).await,
        Command::Fingerprint { phone, out } => keys::fingerprint(&client, &phone, out).await,
        Command::Trust {
            phone,
            fingerprint,
            out,
        } => keys::trust(&client, &phone, fingerprint.as_deref(), out).await,
        Command::History { out } => history(&client, out).await,
        Command::Broadcast { text, out } => broadcast(&client, text, out).await,
        Command::List { out } => list(&client, out).await,
        Command::Chat => chat(&client).await,
        Command::Completions { .. } | Command::Man { .. } => unreachable!("handled above"),
    }
}

/// Opens the home and decides the server: `--server`, else the one the
/// home registered on, else the default.
async fn open_client(args: &Args) -> Result<Client, ClientError> {
    let dir = match &args.home {
        Some(d) => d.clone(),
        None => directories::ProjectDirs::from("", "", "carrier")
            .map(|d| d.data_dir().to_owned())
            .ok_or_else(|| ClientError::Input("no home directory: pass --home DIR".into()))?,
    };
    let server_fingerprint = match &args.server_fingerprint {
        Some(s) => Some(parse_fingerprint(s, "--server-fingerprint")?),
        None => None,
    };
    let home = Home::open(&dir).await?;
    let server = client::server_for(args.server.as_deref(), home.account()?.as_ref())?;
    let notify = Arc::new(|n: Notice| eprintln!("{}", show::notice(&n)));
    let passphrase = args.passphrase.clone().map(Zeroizing::new);
    Ok(Client::new(
        home,
        server,
        server_fingerprint,
        passphrase,
        notify,
    ))
}

fn parse_fingerprint(s: &str, flag: &str) -> Result<Fingerprint, ClientError> {
    Fingerprint::parse(s).ok_or_else(|| {
        ClientError::Input(format!(
            "{flag} takes a key fingerprint: 64 hex characters (spaces and colons are ignored)"
        ))
    })
}

fn parse_phone(phone: &str) -> Result<PhoneNumber, ClientError> {
    PhoneNumber::parse(phone).map_err(|e| ClientError::Input(e.to_string()))
}

/// Prints one result: `json` as a JSON line, or `text` for people.
fn print(
    out: Json,
    json: serde_json::Value,
    text: impl FnOnce() -> String,
) -> Result<(), ClientError> {
    if out.json {
        line(&show::json(&json))
    } else {
        line(&text())
    }
}

/// Writes one line to standard output.
fn line(text: &str) -> Result<(), ClientError> {
    write_out(format!("{text}\n").as_bytes())
}

/// Writes to standard output. A reader that went away (`carrier history |
/// head -1`) or a full disk ends the command with one error line and status
/// 1, where `println!` would panic.
fn write_out(bytes: &[u8]) -> Result<(), ClientError> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(bytes)
        .and_then(|()| stdout.flush())
        .map_err(|source| ClientError::Io {
            context: "cannot write to standard output".into(),
            source,
        })
}

/// The message text: the words given, or standard input when there are none.
fn text_from(words: Vec<String>) -> Result<String, ClientError> {
    let text = if words.is_empty() {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|source| ClientError::Io {
                context: "cannot read the message".into(),
                source,
            })?;
        text.strip_suffix('\n').map(str::to_owned).unwrap_or(text)
    } else {
        words.join(" ")
    };
    if text.is_empty() {
        return Err(ClientError::Input("the message is empty".into()));
    }
    Ok(text)
}

async fn send(
    client: &Client,
    phone: &str,
    words: Vec<String>,
    out: Json,
) -> Result<(), ClientError> {
    let to = parse_phone(phone)?;
    let text = text_from(words)?;
    let session = client.login().await?;
    let id = match session.send(to.as_str(), &text).await {
        Ok(id) => id,
        Err(ClientError::PartlySent(partly)) => {
            // The message went out under this id: a script needs it as
            // much as after a send that went through. People read the
            // error, which names it.
            if out.json {
                line(&show::json(
                    &json!({ "id": partly.id, "to": to.as_str(), "cut_short": true }),
                ))?;
            }
            return Err(ClientError::PartlySent(partly));
        }
        Err(e) => return Err(e),
    };
    print(out, json!({ "id": id, "to": to.as_str() }), || {
        format!("Sent message {id} to {to}")
    })?;
    session.close().await;
    Ok(())
}

async fn broadcast(client: &Client, words: Vec<String>, out: Json) -> Result<(), ClientError> {
    let text = text_from(words)?;
    let session = client.login().await?;
    let id = session.broadcast(&text).await?;
    print(out, json!({ "id": id }), || format!("Broadcast {id} sent"))?;
    session.close().await;
    Ok(())
}

async fn list(client: &Client, out: Json) -> Result<(), ClientError> {
    let session = client.login().await?;
    for u in session.list().await? {
        line(&if out.json {
            show::json(&u)
        } else {
            show::user(&u)
        })?;
    }
    session.close().await;
    Ok(())
}

async fn fetch(client: &Client, out: Json) -> Result<(), ClientError> {
    let mut session = client.login().await?;
    let (received, refused) = session.fetch().await?;
    for m in &received {
        line(&if out.json {
            show::json(m)
        } else {
            show::message(m)
        })?;
    }
    for r in &refused {
        eprintln!("{}", show::refusal(r));
    }
    for (phone, device, name) in session.device_notices().await? {
        eprintln!("{}", show::device_added(&phone, device, &name));
    }
    if received.is_empty() && !out.json {
        eprintln!("No new messages.");
    }
    session.close().await;
    Ok(())
}

async fn whoami(client: &Client, out: Json) -> Result<(), ClientError> {
    let account = client.account()?;
    let device = client.device_id().await?;
    let mut value = json!({
        "phone": account.phone,
        "fingerprint": account.fingerprint,
        "key_type": account.key_type,
        "server": client.server(),
    });
    if let Some(id) = device {
        value["device"] = json!(id);
    }
    print(out, value, || {
        let mut text = format!("{}\n{}", account.phone, account.fingerprint);
        if let Some(id) = device {
            text.push_str(&format!("\ndevice {id}"));
        }
        text
    })?;
    Ok(())
}

async fn history(client: &Client, out: Json) -> Result<(), ClientError> {
    for e in client.home.history().await? {
        line(&if out.json {
            show::json(&e)
        } else {
            show::history(&e)
        })?;
    }
    Ok(())
}

/// A line editor on a terminal; plain lines in and out otherwise.
async fn chat(client: &Client) -> Result<(), ClientError> {
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        client::chat_on_terminal(client).await
    } else {
        let input = tokio::io::BufReader::new(tokio::io::stdin());
        client::chat(client, input, std::io::stdout(), std::io::stderr()).await
    }
}

/// The script is made in memory and then written: `clap_complete` panics
/// when it cannot write (`carrier completions bash | head -1`).
fn completions(shell: args::ShellArg) -> Result<(), ClientError> {
    let shell: clap_complete::Shell = shell.into();
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "carrier", &mut script);
    write_out(&script)
}

/// The page on standard output, or one page per command in `out_dir`,
/// made first if need be (as `~/.local/share/man/man1` often is not yet),
/// with the usual mode.
fn man(out_dir: Option<&std::path::Path>) -> Result<(), ClientError> {
    let written = match out_dir {
        Some(dir) => std::fs::create_dir_all(dir)
            .and_then(|()| clap_mangen::generate_to(Args::command(), dir)),
        None => clap_mangen::Man::new(Args::command()).render(&mut std::io::stdout()),
    };
    written.map_err(|source| ClientError::Io {
        context: match out_dir {
            Some(dir) => format!("cannot write the manual pages into {}", dir.display()),
            None => "cannot write the manual page".into(),
        },
        source,
    })
}
