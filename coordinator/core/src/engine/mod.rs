//! The DAG engine.
