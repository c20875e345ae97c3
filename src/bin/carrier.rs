//! `carrier`: the command-line client. Parses arguments, opens the home,
//! calls the client library, and prints results; errors are one line on
//! standard error with a non-zero exit code.

use std::io::{BufRead, IsTerminal, Read, Write};
use std::path::PathBuf;
use std::sync::Arc;

use carrier::client::{self, Client, ClientError, Home, Notice, show};
use carrier::domain::{Fingerprint, PhoneNumber};
use carrier::protocol::KeyType;
use clap::{Parser, Subcommand, ValueEnum};
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
        Command::Chat => {
            let input = tokio::io::BufReader::new(tokio::io::stdin());
            client::chat(&client, input, std::io::stdout(), std::io::stderr()).await
        }
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
    for u in session.list().await? {
        println!("{}", if json { show::json(&u) } else { show::user(&u) });
    }
    session.close().await;
    Ok(())
}

async fn fetch(client: &Client, json: bool) -> Result<(), ClientError> {
    let mut session = client.login().await?;
    let (received, refused) = session.fetch().await?;
    for m in &received {
        println!(
            "{}",
            if json {
                show::json(m)
            } else {
                show::message(m)
            }
        );
    }
    for r in &refused {
        eprintln!("{}", show::refusal(r));
    }
    if received.is_empty() && !json {
        eprintln!("No new messages.");
    }
    session.close().await;
    Ok(())
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
        println!(
            "{}",
            if json {
                show::json(&e)
            } else {
                show::history(&e)
            }
        );
    }
    Ok(())
}
