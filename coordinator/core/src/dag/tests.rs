//! Tests of the DAG model.
