//! Topics and their subscriptions: create, list, describe, delete, publish,
//! fetch by offset, pull and commit.

use bytes::Bytes;
use reqwest::Method;

use crate::client::types::{
    CreateSubscription, CreateTopic, FetchParams, Fetched, Message, Messages, MessagesOut,
    NewMessage, Offsets, PartitionOffset, PullParams, Stored, Subscription, SubscriptionList,
    Topic, TopicList,
};
use crate::client::{json_body, Client, ClientError};

impl Client {
    /// Topics the caller can see: `GET /v1/topics`.
    pub async fn list_topics(&self) -> Result<Vec<Topic>, ClientError> {
        let list: TopicList = self.call(Method::GET, &["v1", "topics"], &[], None).await?;
        Ok(list.topics)
    }

    /// Creates a topic: `POST /v1/topics`.
    ///
    /// # Errors
    ///
    /// `already_exists` (409) when the name is taken.
    pub async fn create_topic(&self, request: &CreateTopic) -> Result<Topic, ClientError> {
        self.call(
            Method::POST,
            &["v1", "topics"],
            &[],
            Some(json_body(request)),
        )
        .await
    }

    /// Describes one topic with its partitions' offsets: `GET
    /// /v1/topics/{topic}`.
    pub async fn describe_topic(&self, topic: &str) -> Result<Topic, ClientError> {
        self.call(Method::GET, &["v1", "topics", topic], &[], None)
            .await
    }

    /// Deletes a topic and its messages; only the owner may.
    pub async fn delete_topic(&self, topic: &str) -> Result<(), ClientError> {
        self.call_no_content(Method::DELETE, &["v1", "topics", topic], None)
            .await
    }

    /// Publishes a batch: `POST /v1/topics/{topic}/messages`. Returns where
    /// each message was stored, in request order.
    pub async fn publish(
        &self,
        topic: &str,
        messages: &[NewMessage],
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        self.publish_body(topic, json_body(&MessagesOut { messages }), None)
            .await
    }

    /// Publishes `messages` as idempotent producer `producer_id`, numbered
    /// from `first_sequence` (sequences count up per producer and topic).
    /// Sent again, the request is stored once, and the response has
    /// `duplicate` set. The messages of one request go to one partition.
    pub async fn publish_idempotent(
        &self,
        topic: &str,
        producer_id: &str,
        first_sequence: u64,
        messages: &[NewMessage],
    ) -> Result<Stored, ClientError> {
        let body = crate::client::queues::idempotent_body(producer_id, first_sequence, messages);
        self.post_idempotent("topics", topic, body).await
    }

    /// Publishes an already encoded `{"messages": [...]}` body, for callers
    /// that send the same batch many times.
    /// `acks` is `all`, `leader` or `none`; `None` leaves the broker's
    /// default (`all`).
    pub async fn publish_body(
        &self,
        topic: &str,
        body: Bytes,
        acks: Option<&str>,
    ) -> Result<Vec<PartitionOffset>, ClientError> {
        self.post_messages("topics", topic, body, acks).await
    }

    /// Reads one partition by offset: `GET
    /// /v1/topics/{topic}/partitions/{partition}/messages`.
    ///
    /// # Errors
    ///
    /// `offset_out_of_range` (400) when the offset is below the first
    /// retained offset or above the high watermark.
    pub async fn fetch(
        &self,
        topic: &str,
        partition: u32,
        params: FetchParams,
    ) -> Result<Fetched, ClientError> {
        let mut query = Vec::new();
        push_param(&mut query, "offset", params.offset);
        push_param(&mut query, "max_messages", params.max_messages);
        push_param(&mut query, "max_bytes", params.max_bytes);
        push_param(&mut query, "wait_ms", params.wait_ms);
        let partition = partition.to_string();
        let segments = ["v1", "topics", topic, "partitions", &partition, "messages"];
        self.call(Method::GET, &segments, &query, None).await
    }

    /// Subscriptions of a topic: `GET /v1/topics/{topic}/subscriptions`.
    pub async fn list_subscriptions(&self, topic: &str) -> Result<Vec<Subscription>, ClientError> {
        let segments = ["v1", "topics", topic, "subscriptions"];
        let list: SubscriptionList = self.call(Method::GET, &segments, &[], None).await?;
        Ok(list.subscriptions)
    }

    /// Creates a subscription (consumer group) on a topic.
    pub async fn create_subscription(
        &self,
        topic: &str,
        request: &CreateSubscription,
    ) -> Result<Subscription, ClientError> {
        let segments = ["v1", "topics", topic, "subscriptions"];
        self.call(Method::POST, &segments, &[], Some(json_body(request)))
            .await
    }

    /// Deletes a subscription and its committed offsets.
    pub async fn delete_subscription(
        &self,
        topic: &str,
        subscription: &str,
    ) -> Result<(), ClientError> {
        let segments = ["v1", "topics", topic, "subscriptions", subscription];
        self.call_no_content(Method::DELETE, &segments, None).await
    }

    /// Takes the next messages of a subscription: `GET
    /// /v1/topics/{topic}/subscriptions/{subscription}/messages`. The
    /// messages count as delivered to this caller; commit their offsets with
    /// [`Client::commit`] once processed.
    ///
    /// This is a GET, so after a transport error it is sent to the next
    /// broker, and messages the first broker took may be handed out again
    /// after the subscription's position is rewound.
    pub async fn pull(
        &self,
        topic: &str,
        subscription: &str,
        params: PullParams,
    ) -> Result<Vec<Message>, ClientError> {
        let mut query = Vec::new();
        push_param(&mut query, "max_messages", params.max_messages);
        push_param(&mut query, "wait_ms", params.wait_ms);
        let segments = [
            "v1",
            "topics",
            topic,
            "subscriptions",
            subscription,
            "messages",
        ];
        let messages: Messages = self.call(Method::GET, &segments, &query, None).await?;
        Ok(messages.messages)
    }

    /// Commits a subscription's offsets: each entry is the next offset to
    /// read in its partition, one past the last processed message.
    pub async fn commit(
        &self,
        topic: &str,
        subscription: &str,
        offsets: &[PartitionOffset],
    ) -> Result<(), ClientError> {
        let body = json_body(&Offsets {
            offsets: offsets.to_vec(),
        });
        let segments = [
            "v1",
            "topics",
            topic,
            "subscriptions",
            subscription,
            "offsets",
        ];
        self.call_no_content(Method::POST, &segments, Some(body))
            .await
    }
}

/// Adds `name=value` to a query when `value` is set.
pub(crate) fn push_param<T: ToString>(
    query: &mut Vec<(&'static str, String)>,
    name: &'static str,
    value: Option<T>,
) {
    if let Some(value) = value {
        query.push((name, value.to_string()));
    }
}
