//! Ferry, a clustered message broker.
