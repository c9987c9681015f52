//! Request/reply: a client sends a request to the server's queue with a
//! `reply_to` header naming its own reply queue and a `correlation_id`
//! header. The server replies to that queue with the same correlation id.
//! The client matches replies by correlation id and gives up after a
//! timeout.
//!
//! `cargo run --example request_reply`

mod common;

use std::time::{Duration, Instant};

use ferry::client::{Client, CreateQueue, NewMessage, ReceiveParams};

/// How long the client waits for a reply.
const TIMEOUT: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() {
    let client = common::connect().await;
    common::ensure_queue(&client, CreateQueue::named("rpc_queue")).await;
    let reply_queue = format!("rpc-replies-{}", std::process::id());
    common::ensure_queue(&client, CreateQueue::named(reply_queue.as_str())).await;

    let server = tokio::spawn(serve(client.clone(), 3));
    for n in [10u64, 20, 30] {
        match call(&client, &reply_queue, n).await {
            Some(answer) => println!(" [.] fib({n}) = {answer}"),
            None => common::check(false, &format!("no answer for fib({n}) within {TIMEOUT:?}")),
        }
    }
    server.await.expect("server panicked");

    // With the server gone, a call times out.
    let started = Instant::now();
    let answer = call_within(&client, &reply_queue, 5, Duration::from_millis(500)).await;
    common::check(answer.is_none(), "an answer came without a server");
    println!(" [x] No server: gave up after {:?}", started.elapsed());
    if let Err(err) = client.delete_queue(&reply_queue).await {
        common::fail(&err);
    }
}

/// Requests fib(`n`) and waits up to [`TIMEOUT`] for the reply.
async fn call(client: &Client, reply_queue: &str, n: u64) -> Option<u64> {
    call_within(client, reply_queue, n, TIMEOUT).await
}

async fn call_within(client: &Client, reply_queue: &str, n: u64, timeout: Duration) -> Option<u64> {
    let correlation_id = format!("{}-{n}-{:?}", std::process::id(), Instant::now());
    let request = NewMessage::json(n)
        .with_header("reply_to", reply_queue)
        .with_header("correlation_id", correlation_id.as_str())
        // A request that no server takes in time expires.
        .with_ttl_ms(timeout.as_millis() as u64);
    client
        .send("rpc_queue", &[request])
        .await
        .unwrap_or_else(|err| common::fail(&err));
    println!(" [x] Requested fib({n})");

    let deadline = Instant::now() + timeout;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        let params = ReceiveParams {
            max_messages: Some(10),
            wait_ms: Some(left.as_millis() as u64),
            visibility_timeout_ms: None,
        };
        let answers = client
            .receive(reply_queue, params)
            .await
            .unwrap_or_else(|err| common::fail(&err));
        for answer in answers {
            let id = answer.id.clone().unwrap_or_default();
            client
                .ack(reply_queue, &[id])
                .await
                .unwrap_or_else(|err| common::fail(&err));
            // Replies to earlier, timed-out calls are dropped.
            if answer.headers.get("correlation_id") == Some(&correlation_id) {
                return answer.value.as_ref().and_then(|v| v.as_u64());
            }
        }
    }
    None
}

/// Replies to `count` requests, then stops.
async fn serve(client: Client, count: usize) {
    let params = ReceiveParams {
        max_messages: Some(1),
        wait_ms: Some(TIMEOUT.as_millis() as u64),
        visibility_timeout_ms: None,
    };
    let mut answered = 0;
    while answered < count {
        let requests = client
            .receive("rpc_queue", params)
            .await
            .unwrap_or_else(|err| common::fail(&err));
        let Some(request) = requests.into_iter().next() else {
            return;
        };
        let n = request.value.as_ref().and_then(|v| v.as_u64()).unwrap_or(0);
        let (Some(reply_to), Some(correlation_id)) = (
            request.headers.get("reply_to"),
            request.headers.get("correlation_id"),
        ) else {
            continue;
        };
        let answer =
            NewMessage::json(fib(n)).with_header("correlation_id", correlation_id.as_str());
        client
            .send(reply_to, &[answer])
            .await
            .unwrap_or_else(|err| common::fail(&err));
        let id = request.id.clone().unwrap_or_default();
        client
            .ack("rpc_queue", &[id])
            .await
            .unwrap_or_else(|err| common::fail(&err));
        answered += 1;
    }
}

fn fib(n: u64) -> u64 {
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a.wrapping_add(b));
    }
    a
}
