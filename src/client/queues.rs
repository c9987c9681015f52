//! Queues: create, list, describe, delete, send, receive, ack and nack.

use bytes::Bytes;
use reqwest::Method;

use crate::client::types::{
    Acked, Binding, BindingList, CreateQueue, IdempotentMessagesOut, Message, Messages,
    MessagesOut, Nacked, NewMessage, Offsets, PartitionOffset, Queue, QueueList, ReceiveParams,
    SettleRequest, Stored,
};
use crate::client::{json_body, Client, ClientError};

impl Client {
    /// Queues the caller can see: `GET /v1/queues`.
    pub async fn list_queues(&self) -> Result<Vec<Queue>, ClientError> {
        let list: QueueList = self.call(Method::GET, &["v1", "queues"], &[], None).await?;
        Ok(list.queues)
    }

    /// Creates a queue: `POST /v1/queues`.
    ///
    /// # Errors
    ///
    /// `already_exists` (409) when the name is taken.
    pub async fn create_queue(&self, request: &CreateQueue) -> Result<Queue, ClientError> {
        self.call(
            Method::POST,
            &["v1", "queues"],
            &[],
            Some(json_body(request)),
        )
        .await
    }

    /// Describes one queue with its depth and in-flight count: `GET
    /// /v1/queues/{queue}`.
    pub async fn describe_queue(&self, queue: &str) -> Result<Queue, ClientError> {
        self.call(Method::GET, &["v1", "queues", queue], &[], None)
            .await
    }

    /// Deletes a queue and its messages; only the owner may.
    pub async fn delete_queue(&self, queue: &str) -> Result<(), ClientError> {
        self.call_no_content(Method::DELETE, &["v1", "queues", queue], None)
            .await
    }

    /// Sends a batch to a queue: `POST /v1/queues/{queue}/messages`.
    /// Returns each message's offset in the queue's log, in request order.
    pub async fn send(
        &self,
        queue: &str,
        messages: &[NewMessage],
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        self.send_body(queue, json_body(&MessagesOut { messages }), None)
            .await
    }

    /// Sends an already encoded `{"messages": [...]}` body to a queue.
    /// `acks` is `all`, `leader` or `none`; `None` leaves the broker's
    /// default (`all`).
    pub async fn send_body(
        &self,
        queue: &str,
        body: Bytes,
        acks: Option<&str>,
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        self.post_messages("queues", queue, body, acks).await
    }

    /// Sends `messages` as idempotent producer `producer_id`, numbered from
    /// `first_sequence`. Sent again (after a timeout, say), the request is
    /// stored once, and the response has `duplicate` set.
    pub async fn send_idempotent(
        &self,
        queue: &str,
        producer_id: &str,
        first_sequence: u64,
        messages: &[NewMessage],
    ) -> Result<Stored, ClientError> {
        let body = idempotent_body(producer_id, first_sequence, messages);
        self.post_idempotent("queues", queue, body).await
    }

    /// Posts a `{"messages": [...]}` body to `/v1/{collection}/{name}/messages`
    /// with the given `acks`; returns the offsets.
    pub(crate) async fn post_messages(
        &self,
        collection: &str,
        name: &str,
        body: Bytes,
        acks: Option<&str>,
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        let segments = ["v1", collection, name, "messages"];
        let query: Vec<(&str, String)> = acks
            .map(|acks| ("acks", acks.to_string()))
            .into_iter()
            .collect();
        let offsets: Offsets = self
            .call(Method::POST, &segments, &query, Some(body))
            .await?;
        Ok(offsets.offsets)
    }

    /// Posts an idempotent request body to `/v1/{collection}/{name}/messages`.
    pub(crate) async fn post_idempotent(
        &self,
        collection: &str,
        name: &str,
        body: Bytes,
    ) -> Result<Stored, ClientError> {
        let segments = ["v1", collection, name, "messages"];
        self.call(Method::POST, &segments, &[], Some(body)).await
    }

    /// Binds `queue` to `topic`: messages published there whose routing key
    /// matches `pattern` are also sent to the queue.
    pub async fn create_binding(
        &self,
        queue: &str,
        topic: &str,
        pattern: &str,
    ) -> Result<Binding, ClientError> {
        let body = json_body(&serde_json::json!({"topic": topic, "pattern": pattern}));
        let segments = ["v1", "queues", queue, "bindings"];
        self.call(Method::POST, &segments, &[], Some(body)).await
    }

    /// Lists the bindings of `queue`.
    pub async fn list_bindings(&self, queue: &str) -> Result<Vec<Binding>, ClientError> {
        let segments = ["v1", "queues", queue, "bindings"];
        let list: BindingList = self.call(Method::GET, &segments, &[], None).await?;
        Ok(list.bindings)
    }

    /// Removes binding `id` of `queue`.
    pub async fn delete_binding(&self, queue: &str, id: u64) -> Result<(), ClientError> {
        let id = id.to_string();
        self.call_no_content(
            Method::DELETE,
            &["v1", "queues", queue, "bindings", &id],
            None,
        )
        .await
    }

    /// Leases up to `max_messages` messages: `POST
    /// /v1/queues/{queue}/receive`. Each delivery carries an `id` to ack or
    /// nack before its lease (the visibility timeout) runs out. After that
    /// the queue hands the message out again.
    pub async fn receive(
        &self,
        queue: &str,
        params: ReceiveParams,
    ) -> Result<Vec<Message>, ClientError> {
        let segments = ["v1", "queues", queue, "receive"];
        let messages: Messages = self
            .call(Method::POST, &segments, &[], Some(json_body(&params)))
            .await?;
        Ok(messages.messages)
    }

    /// Acks deliveries by id, removing their messages from the queue. Ids
    /// that could not be acked are listed in [`Acked::failed`], not
    /// returned as an error.
    pub async fn ack(&self, queue: &str, ids: &[String]) -> Result<Acked, ClientError> {
        let body = json_body(&SettleRequest { ids, requeue: None });
        let segments = ["v1", "queues", queue, "ack"];
        self.call(Method::POST, &segments, &[], Some(body)).await
    }

    /// Nacks deliveries by id: with `requeue` the messages are ready for
    /// delivery again at once, without it they go to the queue's
    /// dead-letter queue (or are dropped when it has none).
    pub async fn nack(
        &self,
        queue: &str,
        ids: &[String],
        requeue: bool,
    ) -> Result<Nacked, ClientError> {
        let body = json_body(&SettleRequest {
            ids,
            requeue: Some(requeue),
        });
        let segments = ["v1", "queues", queue, "nack"];
        self.call(Method::POST, &segments, &[], Some(body)).await
    }
}

/// Encodes the body of an idempotent request: `messages` numbered from
/// `first_sequence`.
pub(crate) fn idempotent_body(
    producer_id: &str,
    first_sequence: u64,
    messages: &[NewMessage],
) -> Bytes {
    let messages = messages
        .iter()
        .enumerate()
        .map(|(index, message)| NewMessage {
            sequence: Some(first_sequence + index as u64),
            ..message.clone()
        })
        .collect();
    json_body(&IdempotentMessagesOut {
        producer_id,
        messages,
    })
}
