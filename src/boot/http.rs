//! The HTTP boot server (in progress).
