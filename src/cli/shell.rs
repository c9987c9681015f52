//! `ferry shell`: a menu-driven console over the client, for trying the
//! broker by hand.
//!
//! The menu reads one choice per line from standard input, then prompts
//! for what the choice needs. Subscriptions run in the background while the
//! menu stays open: a queue subscription prints each message as it
//! arrives and acks it, and a topic subscription collects messages until
//! "Show collected topic messages" prints them. End of input exits, so
//! the shell can also be driven by a script.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use tokio::io::{AsyncBufReadExt, BufReader, Lines, Stdin};
use tokio::task::JoinHandle;

use crate::cli::context::Context;
use crate::client::{
    Client, CreateQueue, CreateSubscription, CreateTopic, Message, MessageStream, NewMessage,
    PartitionOffset, ReceiveParams,
};

/// Messages granted to a background stream at a time.
const STREAM_CREDIT: u64 = 10;

/// The menu, in the order it is printed; the number is the position.
const MENU: [&str; 16] = [
    "Register",
    "Log in",
    "List queues",
    "Create queue",
    "Delete queue",
    "Send to a queue",
    "Receive from a queue",
    "Subscribe to a queue",
    "Unsubscribe from a queue",
    "List topics",
    "Create topic",
    "Delete topic",
    "Publish to a topic",
    "Show collected topic messages",
    "Subscribe to a topic",
    "Exit",
];

/// Topic messages collected by background subscriptions, by topic.
type Collected = Arc<Mutex<BTreeMap<String, Vec<Message>>>>;

struct Shell {
    client: Client,
    user: Option<String>,
    input: Lines<BufReader<Stdin>>,
    queue_streams: HashMap<String, JoinHandle<()>>,
    topic_streams: HashMap<String, JoinHandle<()>>,
    collected: Collected,
}

/// Runs the shell until the user exits or the input ends.
pub async fn run(context: &Context) -> anyhow::Result<()> {
    let client = match context.token() {
        Some(_) => context.client()?,
        None => context.anonymous_client()?,
    };
    // A login stored by `ferry login` is used until the shell logs in.
    let user = context
        .token()
        .and_then(|_| context.stored())
        .map(|stored| stored.username.clone());
    let mut shell = Shell {
        client,
        user,
        input: BufReader::new(tokio::io::stdin()).lines(),
        queue_streams: HashMap::new(),
        topic_streams: HashMap::new(),
        collected: Arc::default(),
    };
    println!(
        "Ferry shell, connected to {}",
        shell.client.current_broker()
    );
    loop {
        print_menu(shell.user.as_deref());
        let Some(choice) = shell.ask("Choose").await else {
            break;
        };
        let index = choice
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=MENU.len()).contains(n));
        let Some(index) = index else {
            println!(
                "error: `{choice}` is not a menu number (1 to {})",
                MENU.len()
            );
            continue;
        };
        if MENU[index - 1] == "Exit" {
            break;
        }
        match shell.choose(MENU[index - 1]).await {
            Ok(true) => {}
            Ok(false) => break,
            Err(err) => {
                println!("error: {err:#}");
                let unauthenticated = err
                    .downcast_ref::<crate::client::ClientError>()
                    .and_then(|err| err.code())
                    == Some("unauthenticated");
                if unauthenticated && entry_needs_login(MENU[index - 1]) {
                    println!("hint: log in first with \"Log in\"");
                }
            }
        }
    }
    shell.stop_streams();
    println!("Bye");
    Ok(())
}

/// Returns whether menu entry `entry` needs a logged-in user.
fn entry_needs_login(entry: &str) -> bool {
    !matches!(entry, "Register" | "Log in")
}

fn print_menu(user: Option<&str>) {
    println!();
    match user {
        Some(user) => println!("-- logged in as {user} --"),
        None => println!("-- not logged in --"),
    }
    for (index, entry) in MENU.iter().enumerate() {
        println!("{:>2}) {entry}", index + 1);
    }
}

impl Shell {
    /// Prints `prompt` and reads one trimmed line; `None` at end of input.
    async fn ask(&mut self, prompt: &str) -> Option<String> {
        println!("{prompt}:");
        match self.input.next_line().await {
            Ok(Some(line)) => Some(line.trim().to_string()),
            _ => None,
        }
    }

    /// Asks for a value that must not be empty.
    async fn ask_required(&mut self, prompt: &str) -> anyhow::Result<Option<String>> {
        match self.ask(prompt).await {
            None => Ok(None),
            Some(value) if value.is_empty() => anyhow::bail!("{prompt} is required"),
            Some(value) => Ok(Some(value)),
        }
    }

    /// Runs one menu entry; `Ok(false)` when the input ended.
    async fn choose(&mut self, entry: &str) -> anyhow::Result<bool> {
        match entry {
            "Register" | "Log in" => {
                let Some(user) = self.ask_required("User name").await? else {
                    return Ok(false);
                };
                let Some(password) = self.ask_required("Password").await? else {
                    return Ok(false);
                };
                if entry == "Register" {
                    self.client.register(&user, &password).await?;
                    println!("registered {user}; log in to use it");
                } else {
                    let token = self.client.login(&user, &password).await?;
                    self.client = self.client.clone().with_token(token.token);
                    println!("logged in as {user} until {}", token.expires_at);
                    self.user = Some(user);
                }
            }
            "List queues" => {
                for queue in self.client.list_queues().await? {
                    println!(
                        "{}  depth {}  in flight {}  owner {}",
                        queue.name, queue.depth, queue.in_flight, queue.owner
                    );
                }
            }
            "Create queue" => {
                let Some(name) = self.ask_required("Queue name").await? else {
                    return Ok(false);
                };
                self.client
                    .create_queue(&CreateQueue::named(name.as_str()))
                    .await?;
                println!("created queue {name}");
            }
            "Delete queue" => {
                let Some(name) = self.ask_required("Queue name").await? else {
                    return Ok(false);
                };
                self.client.delete_queue(&name).await?;
                println!("deleted queue {name}");
            }
            "Send to a queue" | "Publish to a topic" => {
                let what = if entry == "Send to a queue" {
                    "Queue"
                } else {
                    "Topic"
                };
                let Some(name) = self.ask_required(&format!("{what} name")).await? else {
                    return Ok(false);
                };
                let Some(text) = self.ask("Message (JSON, or text)").await else {
                    return Ok(false);
                };
                let message = NewMessage::json(parse_value(&text));
                let stored = if what == "Queue" {
                    self.client.send(&name, &[message]).await?
                } else {
                    self.client.publish(&name, &[message]).await?
                };
                for offset in stored {
                    println!(
                        "stored at partition {} offset {}",
                        offset.partition, offset.offset
                    );
                }
            }
            "Receive from a queue" => {
                let Some(name) = self.ask_required("Queue name").await? else {
                    return Ok(false);
                };
                let params = ReceiveParams {
                    max_messages: Some(10),
                    wait_ms: Some(1000),
                    visibility_timeout_ms: None,
                };
                let messages = self.client.receive(&name, params).await?;
                if messages.is_empty() {
                    println!("no message in {name}");
                }
                let ids: Vec<String> = messages.iter().filter_map(|m| m.id.clone()).collect();
                for message in &messages {
                    println!("[{name}] {}", describe(message));
                }
                if !ids.is_empty() {
                    self.client.ack(&name, &ids).await?;
                }
            }
            "Subscribe to a queue" => {
                let Some(name) = self.ask_required("Queue name").await? else {
                    return Ok(false);
                };
                if self.queue_streams.contains_key(&name) {
                    anyhow::bail!("already subscribed to queue {name}");
                }
                let stream = self.client.stream_queue(&name).await?;
                let task = tokio::spawn(print_queue(name.clone(), stream));
                self.queue_streams.insert(name.clone(), task);
                println!("subscribed to queue {name}; its messages print as they arrive");
            }
            "Unsubscribe from a queue" => {
                let Some(name) = self.ask_required("Queue name").await? else {
                    return Ok(false);
                };
                match self.queue_streams.remove(&name) {
                    Some(task) => {
                        task.abort();
                        println!("unsubscribed from queue {name}");
                    }
                    None => anyhow::bail!("not subscribed to queue {name}"),
                }
            }
            "List topics" => {
                for topic in self.client.list_topics().await? {
                    println!(
                        "{}  partitions {}  owner {}",
                        topic.name,
                        topic.partitions.len(),
                        topic.owner
                    );
                }
            }
            "Create topic" => {
                let Some(name) = self.ask_required("Topic name").await? else {
                    return Ok(false);
                };
                self.client
                    .create_topic(&CreateTopic::named(name.as_str()))
                    .await?;
                println!("created topic {name}");
            }
            "Delete topic" => {
                let Some(name) = self.ask_required("Topic name").await? else {
                    return Ok(false);
                };
                self.client.delete_topic(&name).await?;
                println!("deleted topic {name}");
            }
            "Show collected topic messages" => {
                let Some(name) = self.ask_required("Topic name").await? else {
                    return Ok(false);
                };
                let collected = lock(&self.collected)
                    .get(&name)
                    .cloned()
                    .unwrap_or_default();
                if collected.is_empty() {
                    println!("no message collected from topic {name}");
                }
                for message in &collected {
                    println!("[{name}] {}", describe(message));
                }
            }
            "Subscribe to a topic" => {
                let Some(name) = self.ask_required("Topic name").await? else {
                    return Ok(false);
                };
                self.subscribe_topic(&name).await?;
            }
            other => anyhow::bail!("unknown menu entry {other}"),
        }
        Ok(true)
    }

    /// Creates (or reuses) this user's shell subscription on `topic` and
    /// collects its messages in the background.
    async fn subscribe_topic(&mut self, topic: &str) -> anyhow::Result<()> {
        if self.topic_streams.contains_key(topic) {
            anyhow::bail!("already subscribed to topic {topic}");
        }
        let user = self.user.as_deref().unwrap_or("anonymous");
        let subscription = format!("shell-{user}");
        match self
            .client
            .create_subscription(topic, &CreateSubscription::named(subscription.as_str()))
            .await
        {
            Ok(_) => {}
            Err(err) if err.code() == Some("already_exists") => {}
            Err(err) => return Err(err).context("failed to create the subscription"),
        }
        let stream = self.client.subscribe(topic, &subscription).await?;
        let task = tokio::spawn(collect_topic(
            topic.to_string(),
            stream,
            Arc::clone(&self.collected),
        ));
        self.topic_streams.insert(topic.to_string(), task);
        println!(
            "subscribed to topic {topic} as subscription {subscription}; \
             messages are collected for \"Show collected topic messages\""
        );
        Ok(())
    }

    fn stop_streams(&mut self) {
        for (_, task) in self.queue_streams.drain().chain(self.topic_streams.drain()) {
            task.abort();
        }
    }
}

/// Prints and acks the messages of a queue stream until it ends.
async fn print_queue(queue: String, stream: MessageStream) {
    follow(&queue, stream, |message| {
        println!("[{queue}] {}", describe(&message));
        Settle::Ids(message.id.into_iter().collect())
    })
    .await;
}

/// Collects and acks the messages of a subscription stream until it ends.
async fn collect_topic(topic: String, stream: MessageStream, collected: Collected) {
    follow(&topic, stream, |message| {
        let offset = PartitionOffset {
            partition: message.partition,
            offset: message.offset,
        };
        lock(&collected)
            .entry(topic.clone())
            .or_default()
            .push(message);
        println!("[{topic}] collected a message");
        Settle::Offset(offset)
    })
    .await;
}

/// The acknowledgement of a handled stream message.
enum Settle {
    /// Queue deliveries, by id.
    Ids(Vec<String>),
    /// A subscription message, by partition and offset.
    Offset(PartitionOffset),
}

/// Hands each message of `stream` to `handle`, acks it as `handle`
/// returns and grants one more credit, until the stream ends or fails.
async fn follow(label: &str, mut stream: MessageStream, mut handle: impl FnMut(Message) -> Settle) {
    let result: Result<(), crate::client::ClientError> = async {
        stream.credit(STREAM_CREDIT).await?;
        while let Some(message) = stream.next_message().await? {
            match handle(message) {
                Settle::Ids(ids) => {
                    stream.ack_ids(&ids).await?;
                }
                Settle::Offset(offset) => {
                    stream.ack_offsets(&[offset]).await?;
                }
            }
            stream.credit(1).await?;
        }
        Ok(())
    }
    .await;
    match result {
        Ok(()) => println!("[{label}] the broker closed the stream"),
        Err(err) => println!("[{label}] error: {err}"),
    }
}

/// Reads `text` as JSON, or as a string when it is not JSON.
fn parse_value(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|_| serde_json::Value::String(text.to_string()))
}

/// Formats one line about a delivered message: its value and who sent it.
fn describe(message: &Message) -> String {
    let value = match (&message.value, &message.value_b64) {
        (Some(value), _) => value.to_string(),
        (None, Some(bytes)) => format!("<{} base64 characters>", bytes.len()),
        (None, None) => "<no value>".to_string(),
    };
    format!("{value} (from {})", message.producer)
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
