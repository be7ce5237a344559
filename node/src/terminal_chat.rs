//! `ringchat chat`: a terminal client on the Rust SDK (`client/`), for trying a node by hand
//! and for scripts: lines typed are sent to the open channel, live messages are printed as they
//! arrive, and `/`-commands open DMs and groups and read history.
//!
//! Output lines (stable, so scripts and the test can read them):
//! `[<channel_id>] <username>: <text>` for a message, `* …` for everything else.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use ringchat_client::{ClientError, HttpClient, Message, Trust, WsClient};
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long a `recv` waits before the loop looks at stdin again (it is woken by either).
const RECV_SLICE: Duration = Duration::from_secs(30);

const HELP: &str = "* commands: /dm <username> | /group <name> <username>... | /open <channel_id> | \
/channels | /history [n] | /quit; any other line is sent to the open channel";

/// Logs in as `username` on `url` and runs until `/quit` or the end of stdin. An `https://`
/// URL is reached over TLS, trusting the system's roots and the CA in `ca_file` if given.
pub async fn run(url: &str, username: &str, password: &str, ca_file: Option<&Path>) -> anyhow::Result<()> {
    let trust = match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).with_context(|| format!("reading --ca-cert {}", path.display()))?;
            Some(Trust::with_ca_pem(&pem).with_context(|| format!("--ca-cert {}", path.display()))?)
        }
        None => None,
    };
    let http = match &trust {
        Some(trust) => HttpClient::with_trust(url, trust),
        None => HttpClient::new(url),
    };
    let session = http
        .login(username, password, Some("terminal"), None)
        .await
        .map_err(|e| anyhow!("login as {username}: {e}"))?;
    let http = http.with_token(&session.token);
    let ws = match &trust {
        Some(trust) => WsClient::connect_with_trust(url, trust).await,
        None => WsClient::connect(url).await,
    };
    let mut ws = ws.context("WebSocket")?;
    ws.hello(&session.token).await.context("hello")?;
    let mut chat = TerminalChat {
        http,
        me: session.user_id,
        names: HashMap::new(),
        open: None,
    };
    println!("* logged in as {username}");
    println!("{HELP}");
    let mut lines = BufReader::new(tokio::io::stdin()).lines();
    loop {
        let event = tokio::select! {
            line = lines.next_line() => Event::Line(line?),
            frame = ws.recv(RECV_SLICE) => Event::Frame(frame),
        };
        match event {
            Event::Line(None) => return Ok(()),
            Event::Line(Some(line)) => match chat.command(line.trim()).await {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => println!("* error: {e:#}"),
            },
            Event::Frame(Ok(frame)) => {
                if frame["type"] == "message" {
                    if let Ok(message) = serde_json::from_value::<Message>(frame) {
                        chat.print(&message).await;
                    }
                }
            }
            Event::Frame(Err(ClientError::Timeout)) => {}
            Event::Frame(Err(e)) => bail!("connection lost: {e}"),
        }
    }
}

enum Event {
    Line(Option<String>),
    Frame(Result<serde_json::Value, ClientError>),
}

struct TerminalChat {
    http: HttpClient,
    me: String,
    /// Usernames by user id, looked up once.
    names: HashMap<String, String>,
    /// The channel lines are sent to.
    open: Option<String>,
}

impl TerminalChat {
    /// Runs one input line; false to quit.
    async fn command(&mut self, line: &str) -> anyhow::Result<bool> {
        let mut words = line.split_whitespace();
        match words.next() {
            None => {}
            Some("/quit") => return Ok(false),
            Some("/help") => println!("{HELP}"),
            Some("/dm") => {
                let name = words.next().ok_or_else(|| anyhow!("/dm <username>"))?;
                let other = self.http.user_by_name(name).await?;
                let dm = self.http.open_dm(&other.user_id).await?;
                self.open_channel(&dm.channel_id, &format!("DM with {}", other.username));
            }
            Some("/group") => {
                let name = words.next().ok_or_else(|| anyhow!("/group <name> <username>..."))?;
                let mut members = Vec::new();
                for username in words {
                    members.push(self.http.user_by_name(username).await?.user_id);
                }
                let group = self.http.create_group(name, &members).await?;
                self.open_channel(&group.channel_id, &format!("group {name}"));
            }
            Some("/open") => {
                let id = words.next().ok_or_else(|| anyhow!("/open <channel_id>"))?;
                let channel = self.http.channels().await?.into_iter().find(|c| c.channel_id == id);
                let channel = channel.ok_or_else(|| anyhow!("you have no channel {id}"))?;
                self.open_channel(&channel.channel_id, &channel.kind);
            }
            Some("/channels") => {
                for c in self.http.channels().await? {
                    let mut names = Vec::new();
                    for m in &c.members {
                        names.push(self.name_of(m).await);
                    }
                    let label = c.name.clone().unwrap_or_else(|| c.kind.clone());
                    println!(
                        "* {} {label} [{}] {} messages",
                        c.channel_id,
                        names.join(", "),
                        c.last_seq
                    );
                }
            }
            Some("/history") => {
                let n = match words.next() {
                    Some(n) => n.parse::<u32>().context("/history [n]")?,
                    None => 20,
                };
                let open = self.open_or_err()?;
                let page = self.http.history(&open, None, None, Some(n.clamp(1, 500))).await?;
                for m in &page.messages {
                    self.print(m).await;
                }
            }
            Some(w) if w.starts_with('/') => println!("* unknown command {w}; /help lists them"),
            Some(_) => {
                let open = self.open_or_err()?;
                let client_msg_id = crate::auth::new_id("t_");
                let (_, sent) = self.http.send_message(&open, line, &client_msg_id).await?;
                println!("* sent seq {}", sent.seq);
            }
        }
        Ok(true)
    }

    fn open_channel(&mut self, channel_id: &str, what: &str) {
        println!("* open {channel_id} ({what})");
        self.open = Some(channel_id.to_string());
    }

    fn open_or_err(&self) -> anyhow::Result<String> {
        self.open
            .clone()
            .ok_or_else(|| anyhow!("no channel open: /dm, /group or /open first"))
    }

    async fn print(&mut self, m: &Message) {
        let who = if m.sender_id == self.me {
            "me".to_string()
        } else {
            self.name_of(&m.sender_id).await
        };
        println!("[{}] {who}: {}", m.channel_id, m.text);
    }

    /// The username of `user_id` (its id when the lookup fails).
    async fn name_of(&mut self, user_id: &str) -> String {
        if let Some(name) = self.names.get(user_id) {
            return name.clone();
        }
        match self.http.user(user_id).await {
            Ok(user) => {
                self.names.insert(user_id.to_string(), user.username.clone());
                user.username
            }
            Err(_) => user_id.to_string(),
        }
    }
}
