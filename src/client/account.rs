//! Users, tokens, grants and the system routes.

use reqwest::Method;

use crate::client::types::{Cluster, Credentials, GrantRequest, Health, Permission};
use crate::client::types::{ResourceKind, Token, User};
use crate::client::{api_error, json_body, Client, ClientError};

impl Client {
    /// Registers a user: `POST /v1/users`.
    ///
    /// # Errors
    ///
    /// `already_exists` (409) when the name is taken, `invalid_argument`
    /// (400) for a bad name or a password the broker rejects.
    pub async fn register(&self, username: &str, password: &str) -> Result<User, ClientError> {
        let body = json_body(&Credentials {
            username: username.to_string(),
            password: password.to_string(),
        });
        self.call(Method::POST, &["v1", "users"], &[], Some(body))
            .await
    }

    /// Logs in: `POST /v1/tokens`. Pass the token to [`Client::with_token`].
    ///
    /// # Errors
    ///
    /// `unauthenticated` (401) for a wrong name or password.
    pub async fn login(&self, username: &str, password: &str) -> Result<Token, ClientError> {
        let body = json_body(&Credentials {
            username: username.to_string(),
            password: password.to_string(),
        });
        self.call(Method::POST, &["v1", "tokens"], &[], Some(body))
            .await
    }

    /// Revokes this client's token on every broker: `DELETE
    /// /v1/tokens/current`.
    pub async fn logout(&self) -> Result<(), ClientError> {
        self.call_no_content(Method::DELETE, &["v1", "tokens", "current"], None)
            .await
    }

    /// Gives `user` a permission on a private topic or queue; only the
    /// owner may.
    pub async fn grant(
        &self,
        kind: ResourceKind,
        name: &str,
        user: &str,
        permission: Permission,
    ) -> Result<(), ClientError> {
        let body = json_body(&GrantRequest { user, permission });
        let segments = ["v1", kind.path_segment(), name, "grants"];
        self.call_no_content(Method::POST, &segments, Some(body))
            .await
    }

    /// Takes back a permission given by [`Client::grant`].
    pub async fn revoke(
        &self,
        kind: ResourceKind,
        name: &str,
        user: &str,
        permission: Permission,
    ) -> Result<(), ClientError> {
        let body = json_body(&GrantRequest { user, permission });
        let segments = ["v1", kind.path_segment(), name, "grants"];
        self.call_no_content(Method::DELETE, &segments, Some(body))
            .await
    }

    /// Checks that the broker serves requests: `GET /healthz`.
    pub async fn health(&self) -> Result<Health, ClientError> {
        self.call(Method::GET, &["healthz"], &[], None).await
    }

    /// Returns the broker's counters in the Prometheus text format: `GET
    /// /metrics`.
    pub async fn metrics(&self) -> Result<String, ClientError> {
        let exchange = self.exchange(Method::GET, &["metrics"], &[], None).await?;
        if !exchange.status.is_success() {
            return Err(api_error(exchange.status, &exchange.body));
        }
        Ok(String::from_utf8_lossy(&exchange.body).into_owned())
    }

    /// Brokers, controller and partition leaders: `GET /v1/cluster`.
    pub async fn cluster(&self) -> Result<Cluster, ClientError> {
        self.call(Method::GET, &["v1", "cluster"], &[], None).await
    }

    /// Moves the replicas of a topic or queue to `replicas`, the preferred
    /// leader first: `POST /v1/cluster/reassign`. Returns once the target
    /// is recorded; the move completes when the new replicas caught up.
    pub async fn reassign(
        &self,
        kind: ResourceKind,
        name: &str,
        replicas: &[u32],
    ) -> Result<serde_json::Value, ClientError> {
        let field = match kind {
            ResourceKind::Topic => "topic",
            ResourceKind::Queue => "queue",
        };
        let body = serde_json::json!({ field: name, "replicas": replicas });
        self.call(
            Method::POST,
            &["v1", "cluster", "reassign"],
            &[],
            Some(json_body(&body)),
        )
        .await
    }

    /// Returns the OpenAPI description of the REST API: `GET
    /// /v1/openapi.json`.
    pub async fn openapi(&self) -> Result<serde_json::Value, ClientError> {
        self.call(Method::GET, &["v1", "openapi.json"], &[], None)
            .await
    }
}
