//! Resolving boot paths against the node store (in progress).
