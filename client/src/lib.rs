//! Client SDK of dagraid. Not built yet: see the coordinator issue.
