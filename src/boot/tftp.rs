//! The TFTP server (in progress).
