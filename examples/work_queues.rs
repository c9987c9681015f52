//! Work queues: competing workers share the tasks of one queue. A worker
//! acknowledges a task only when it is done, so when a worker dies with a
//! task in hand, the queue delivers that task again to another worker once
//! its lease (the visibility timeout) ends.
//!
//! Here one of three workers dies after taking its first task; the others
//! finish every task, the orphaned one included.
//!
//! `cargo run --example work_queues`

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferry::client::{Client, CreateQueue, NewMessage, ReceiveParams};

const TASKS: usize = 12;
const WORKERS: usize = 3;

#[tokio::main]
async fn main() {
    let client = common::connect().await;
    let queue = CreateQueue {
        // A task not acknowledged within one second goes to another worker.
        visibility_timeout_ms: Some(1000),
        ..CreateQueue::named("tasks")
    };
    common::ensure_queue(&client, queue).await;

    let tasks: Vec<NewMessage> = (0..TASKS)
        .map(|n| NewMessage::json(format!("task-{n}")))
        .collect();
    client
        .send("tasks", &tasks)
        .await
        .unwrap_or_else(|err| common::fail(&err));
    println!(" [x] Sent {TASKS} tasks");

    let done: Arc<Mutex<BTreeMap<String, (usize, u32)>>> = Arc::default();
    let workers: Vec<_> = (0..WORKERS)
        .map(|worker| {
            let client = client.clone();
            let done = Arc::clone(&done);
            tokio::spawn(async move { work(client, worker, worker == 0, done).await })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker panicked");
    }

    let done = done.lock().unwrap();
    for (task, (worker, deliveries)) in done.iter() {
        println!(" [.] {task} done by worker {worker} (delivery {deliveries})");
    }
    common::check(done.len() == TASKS, "not every task was done");
    let redelivered = done
        .values()
        .filter(|(_, deliveries)| *deliveries > 1)
        .count();
    common::check(
        redelivered == 1,
        "the dead worker's task was not redelivered once",
    );
    println!(" [x] All {TASKS} tasks done, {redelivered} after its worker died");
}

/// Takes tasks one at a time until the queue stays empty for two seconds.
/// A worker that `dies` takes one task and stops without acknowledging it.
async fn work(
    client: Client,
    worker: usize,
    dies: bool,
    done: Arc<Mutex<BTreeMap<String, (usize, u32)>>>,
) {
    let params = ReceiveParams {
        max_messages: Some(1),
        wait_ms: Some(2000),
        visibility_timeout_ms: None,
    };
    loop {
        let messages = client
            .receive("tasks", params)
            .await
            .unwrap_or_else(|err| common::fail(&err));
        let Some(task) = messages.into_iter().next() else {
            return;
        };
        let name = task.value.as_ref().and_then(|v| v.as_str()).unwrap_or("?");
        if dies {
            println!(" [!] worker {worker} took {name} and died");
            return;
        }
        // The work itself.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let id = task.id.clone().unwrap_or_default();
        let acked = client
            .ack("tasks", &[id])
            .await
            .unwrap_or_else(|err| common::fail(&err));
        if acked.failed.is_empty() {
            let deliveries = task.delivery_count.unwrap_or(1);
            done.lock()
                .unwrap()
                .insert(name.to_string(), (worker, deliveries));
        }
    }
}
