//! `grant`, `revoke`, `cluster`, `health`, `metrics` and `openapi`.

use clap::Args;

use crate::cli::args::{KindArg, PermissionArg};
use crate::cli::context::Context;
use crate::cli::output::{print_json, print_text};
use crate::client::{Permission, ResourceKind};

/// Options of `ferry grant` and `ferry revoke`.
#[derive(Debug, Args)]
pub struct GrantArgs {
    /// Kind of resource
    #[arg(value_enum)]
    kind: KindArg,

    /// Topic or queue name
    name: String,

    /// User who gets or loses the permission
    user: String,

    /// The permission
    #[arg(value_enum)]
    permission: PermissionArg,
}

/// Grants a permission, or revokes it when `add` is false.
pub async fn grant(context: &Context, args: GrantArgs, add: bool) -> anyhow::Result<()> {
    let client = context.client()?;
    let kind = ResourceKind::from(args.kind);
    let permission = Permission::from(args.permission);
    let permission_name = match permission {
        Permission::Publish => "publish",
        Permission::Consume => "consume",
    };
    let kind_name = match kind {
        ResourceKind::Topic => "topic",
        ResourceKind::Queue => "queue",
    };
    if add {
        client
            .grant(kind, &args.name, &args.user, permission)
            .await?;
        eprintln!(
            "granted {permission_name} on {kind_name} {} to {}",
            args.name, args.user
        );
    } else {
        client
            .revoke(kind, &args.name, &args.user, permission)
            .await?;
        eprintln!(
            "revoked {permission_name} on {kind_name} {} from {}",
            args.name, args.user
        );
    }
    Ok(())
}

/// Prints the cluster view.
pub async fn cluster(context: &Context) -> anyhow::Result<()> {
    print_json(&context.client()?.cluster().await?)
}

/// Options of `ferry reassign`.
#[derive(Debug, Args)]
pub struct ReassignArgs {
    /// Kind of resource
    #[arg(value_enum)]
    kind: KindArg,

    /// Topic or queue name
    name: String,

    /// Broker ids that should hold the replicas, comma-separated, the
    /// preferred leader first
    #[arg(long, value_delimiter = ',', required = true)]
    replicas: Vec<u32>,
}

/// Moves the replicas of a topic or queue to other brokers.
pub async fn reassign(context: &Context, args: ReassignArgs) -> anyhow::Result<()> {
    let client = context.client()?;
    let answer = client
        .reassign(ResourceKind::from(args.kind), &args.name, &args.replicas)
        .await?;
    eprintln!(
        "moving {} to brokers {:?}; `ferry cluster` shows when the replicas switched",
        args.name, args.replicas
    );
    print_json(&answer)
}

/// Prints the health status from the first broker that responds.
pub async fn health(context: &Context) -> anyhow::Result<()> {
    print_json(&context.anonymous_client()?.health().await?)
}

/// Prints the Prometheus metrics text.
pub async fn metrics(context: &Context) -> anyhow::Result<()> {
    print_text(&context.anonymous_client()?.metrics().await?)
}

/// Prints the OpenAPI description.
pub async fn openapi(context: &Context) -> anyhow::Result<()> {
    print_json(&context.anonymous_client()?.openapi().await?)
}
