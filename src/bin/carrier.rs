//! `carrier`: the command-line client. Parses arguments, opens the home,
//! calls the client library, and prints results; errors are one line on
//! standard error with a non-zero exit code.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use carrier::client::{Client, ClientError, Event, Home, Notice, Received, Refusal, Session};
use carrier::domain::{Fingerprint, PhoneNumber};
use carrier::protocol::KeyType;
use clap::{Parser, Subcommand, ValueEnum};
use tokio::io::AsyncBufReadExt;
use zeroize::Zeroizing;

/// Carrier: end-to-end-encrypted store-and-forward messaging.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Server address.
    #[arg(
        long,
        env = "CARRIER_SERVER",
        default_value = "127.0.0.1:5000",
        global = true
    )]
    server: String,
    /// Expected fingerprint of the server's key (otherwise pinned on first use).
    #[arg(long, env = "CARRIER_SERVER_FINGERPRINT", global = true)]
    server_fingerprint: Option<String>,
    /// Directory holding your key, contacts and history.
    #[arg(long, env = "CARRIER_HOME", global = true)]
    home: Option<PathBuf>,
    /// Passphrase protecting your key file (prefer the environment variable).
    #[arg(
        long,
        env = "CARRIER_PASSPHRASE",
        hide_env_values = true,
        global = true
    )]
    passphrase: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Register a phone number: makes your key, then asks for the code the server sent.
    Register {
        phone: String,
        #[arg(long, value_enum, default_value = "p256")]
        key_type: KeyTypeArg,
    },
    /// Send an encrypted message (the text is read from standard input when omitted).
    Send { phone: String, text: Vec<String> },
    /// Receive waiting messages, store them, then acknowledge them.
    Fetch {
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Print your phone number and key fingerprint.
    Whoami,
    /// Print a contact's key fingerprint.
    Fingerprint { phone: String },
    /// Accept a contact's new key after checking its fingerprint with them.
    Trust { phone: String },
    /// Send a signed public message to every connected user of the neighbourhood.
    Broadcast { text: Vec<String> },
    /// The users of the neighbourhood: phone, key fingerprint, home server, online or offline.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Print the stored conversation.
    History {
        #[arg(long)]
        json: bool,
    },
    /// Interactive session: send, broadcast, fetch, list, quit; incoming messages appear live.
    Chat,
}

#[derive(Clone, Copy, ValueEnum)]
enum KeyTypeArg {
    P256,
    Rsa,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    if let Err(e) = run(args).await {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), ClientError> {
    let client = open_client(&args).await?;
    match args.command {
        Command::Register { phone, key_type } => register(&client, &phone, key_type).await,
        Command::Send { phone, text } => send(&client, &phone, text).await,
        Command::Fetch { json } => fetch(&client, json).await,
        Command::Whoami => whoami(&client),
        Command::Fingerprint { phone } => fingerprint(&client, &phone).await,
        Command::Trust { phone } => trust(&client, &phone).await,
        Command::History { json } => history(&client, json).await,
        Command::Broadcast { text } => broadcast(&client, text).await,
        Command::List { json } => list(&client, json).await,
        Command::Chat => chat(&client).await,
    }
}

async fn open_client(args: &Args) -> Result<Client, ClientError> {
    let dir = match &args.home {
        Some(d) => d.clone(),
        None => directories::ProjectDirs::from("", "", "carrier")
            .map(|d| d.data_dir().to_owned())
            .ok_or_else(|| ClientError::Input("no home directory: pass --home DIR".into()))?,
    };
    let server_fingerprint = match &args.server_fingerprint {
        Some(s) => Some(Fingerprint::parse(s).ok_or_else(|| {
            ClientError::Input(
                "--server-fingerprint takes the 64 hex characters the server prints".into(),
            )
        })?),
        None => None,
    };
    let home = Home::open(&dir).await?;
    let notify = Arc::new(|n: Notice| match n {
        Notice::ServerPinned { addr, fingerprint } => {
            eprintln!("Pinned the key of server {addr} on first use: {fingerprint}")
        }
        Notice::ContactPinned { phone, fingerprint } => {
            eprintln!("Pinned the key of {phone} on first use: {fingerprint}")
        }
    });
    let passphrase = args.passphrase.clone().map(Zeroizing::new);
    Ok(Client::new(
        home,
        args.server.clone(),
        server_fingerprint,
        passphrase,
        notify,
    ))
}

async fn register(client: &Client, phone: &str, key_type: KeyTypeArg) -> Result<(), ClientError> {
    let key_type = match key_type {
        KeyTypeArg::P256 => KeyType::P256,
        KeyTypeArg::Rsa => KeyType::Rsa,
    };
    let (session, replaced) = client.register(phone, key_type, read_code).await?;
    let account = client.account()?;
    println!(
        "Registered {} with key {}",
        account.phone, account.fingerprint
    );
    if replaced {
        println!(
            "This replaced the previous key of {}; your contacts will be warned.",
            account.phone
        );
    }
    session.close().await;
    Ok(())
}

/// Reads the code: a prompt on a terminal, a plain line from a pipe.
fn read_code(phone: &PhoneNumber) -> Result<String, ClientError> {
    let stdin = std::io::stdin();
    if stdin.is_terminal() {
        eprint!("Enter the code sent to {phone}: ");
        let _ = std::io::stderr().flush();
    }
    let mut line = String::new();
    stdin
        .lock()
        .read_line(&mut line)
        .map_err(|source| ClientError::Io {
            context: "cannot read the code".into(),
            source,
        })?;
    if line.trim().is_empty() {
        return Err(ClientError::Input(
            "no code given: type the 6-digit code the server sent".into(),
        ));
    }
    Ok(line)
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

async fn send(client: &Client, phone: &str, words: Vec<String>) -> Result<(), ClientError> {
    let text = text_from(words)?;
    let session = client.login().await?;
    let id = session.send(phone, &text).await?;
    println!(
        "Sent message {id} to {}",
        PhoneNumber::parse(phone)
            .map(|p| p.to_string())
            .unwrap_or_default()
    );
    session.close().await;
    Ok(())
}

async fn broadcast(client: &Client, words: Vec<String>) -> Result<(), ClientError> {
    let text = text_from(words)?;
    let session = client.login().await?;
    let id = session.broadcast(&text).await?;
    println!("Broadcast {id} sent");
    session.close().await;
    Ok(())
}

async fn list(client: &Client, json: bool) -> Result<(), ClientError> {
    let session = client.login().await?;
    print_users(&session.list().await?, json);
    session.close().await;
    Ok(())
}

fn print_users(users: &[carrier::protocol::ListedUser], json: bool) {
    for u in users {
        if json {
            println!(
                "{}",
                serde_json::to_string(u).expect("a user always serialises")
            );
        } else {
            let state = if u.online { "online" } else { "offline" };
            println!("{}  {}  {}  {state}", u.phone, u.fingerprint, u.home);
        }
    }
}

async fn fetch(client: &Client, json: bool) -> Result<(), ClientError> {
    let mut session = client.login().await?;
    let (received, refused) = session.fetch().await?;
    for m in &received {
        print_message(m, json);
    }
    for r in &refused {
        print_refusal(r);
    }
    if received.is_empty() && !json {
        eprintln!("No new messages.");
    }
    session.close().await;
    Ok(())
}

fn print_message(m: &Received, json: bool) {
    if json {
        println!(
            "{}",
            serde_json::to_string(m).expect("a message always serialises")
        );
    } else {
        println!("[{}] {}: {}", format_time(m.sent_at), m.from, m.text);
    }
}

fn print_refusal(r: &Refusal) {
    eprintln!(
        "warning: message {} from {} refused: {}",
        r.id, r.from, r.reason
    );
}

fn whoami(client: &Client) -> Result<(), ClientError> {
    let account = client.account()?;
    println!("{}", account.phone);
    println!("{}", account.fingerprint);
    Ok(())
}

async fn fingerprint(client: &Client, phone: &str) -> Result<(), ClientError> {
    let phone = PhoneNumber::parse(phone).map_err(|e| ClientError::Input(e.to_string()))?;
    let session = client.login().await?;
    let (_, fp) = session.contact_key(&phone).await?;
    println!("{fp}");
    session.close().await;
    Ok(())
}

async fn trust(client: &Client, phone: &str) -> Result<(), ClientError> {
    let phone = PhoneNumber::parse(phone).map_err(|e| ClientError::Input(e.to_string()))?;
    let session = client.login().await?;
    let fp = session.trust(&phone).await?;
    println!("Now trusting {phone} with key {fp}");
    session.close().await;
    Ok(())
}

async fn history(client: &Client, json: bool) -> Result<(), ClientError> {
    for e in client.home.history().await? {
        if json {
            println!(
                "{}",
                serde_json::to_string(&e).expect("an entry always serialises")
            );
        } else {
            let arrow = if e.direction == "in" { "from" } else { "to" };
            println!(
                "[{}] {arrow} {}: {}",
                format_time(e.sent_at),
                e.peer,
                e.text
            );
        }
    }
    Ok(())
}

async fn chat(client: &Client) -> Result<(), ClientError> {
    let mut session = client.login().await?;
    println!(
        "Logged in as {}. Commands: send <phone> <text> | broadcast <text> | fetch | list | quit",
        session.me()
    );
    let (received, refused) = session.fetch().await?;
    received.iter().for_each(|m| print_message(m, false));
    refused.iter().for_each(print_refusal);
    let mut lines = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let mut keepalive = tokio::time::interval(CHAT_KEEPALIVE);
    loop {
        tokio::select! {
            _ = keepalive.tick() => {
                let _ = session.conn.start(carrier::protocol::Request::Ping).await;
            }
            line = lines.next_line() => {
                let line = line.map_err(|source| ClientError::Io { context: "cannot read input".into(), source })?;
                let Some(line) = line else { break };
                if !chat_command(&mut session, line.trim()).await {
                    break;
                }
            }
            pushed = session.conn.next_event() => {
                let Some(event) = pushed else {
                    return Err(ClientError::Disconnected);
                };
                show_event(&mut session, event).await?;
            }
        }
    }
    session.close().await;
    Ok(())
}

/// How often `chat` pings, so an idle session is not closed by the server.
const CHAT_KEEPALIVE: std::time::Duration = std::time::Duration::from_secs(60);

/// Shows something the server pushed during `chat`.
async fn show_event(session: &mut Session<'_>, event: Event) -> Result<(), ClientError> {
    match event {
        Event::Message(m) => match session.take_pushed(m).await? {
            Ok(Some(m)) => print_message(&m, false),
            Ok(None) => {}
            Err(r) => print_refusal(&r),
        },
        Event::Broadcast(b) => match session.verify_broadcast(&b).await {
            Ok(()) => println!(
                "[{}] (broadcast) {}: {}",
                format_time(b.sent_at as i64),
                b.from,
                b.text
            ),
            Err(e) => eprintln!("warning: {e}"),
        },
    }
    Ok(())
}

/// Runs one chat command; returns false to leave.
async fn chat_command(session: &mut Session<'_>, line: &str) -> bool {
    let (cmd, rest) = line.split_once(' ').unwrap_or((line, ""));
    let outcome = match cmd {
        "" => Ok(()),
        "quit" | "exit" => return false,
        "send" => match rest.trim().split_once(' ') {
            Some((to, text)) => session
                .send(to, text.trim())
                .await
                .map(|id| println!("Sent message {id} to {to}")),
            None => Err(ClientError::Input("usage: send <phone> <text>".into())),
        },
        "fetch" => session.fetch().await.map(|(received, refused)| {
            received.iter().for_each(|m| print_message(m, false));
            refused.iter().for_each(print_refusal);
            if received.is_empty() {
                println!("No new messages.");
            }
        }),
        "broadcast" if !rest.trim().is_empty() => session
            .broadcast(rest.trim())
            .await
            .map(|id| println!("Broadcast {id} sent")),
        "broadcast" => Err(ClientError::Input("usage: broadcast <text>".into())),
        "list" => session.list().await.map(|users| print_users(&users, false)),
        other => Err(ClientError::Input(format!(
            "unknown command '{other}': send, broadcast, fetch, list or quit"
        ))),
    };
    if let Err(e) = outcome {
        eprintln!("error: {e}");
    }
    true
}

/// Formats milliseconds since the Unix epoch as `YYYY-MM-DD HH:MM:SS UTC`.
fn format_time(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
