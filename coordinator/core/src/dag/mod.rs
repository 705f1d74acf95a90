//! DAG model: nodes, operations, edges.
