//! TFTP packets on the server port and on a transfer's socket: request parsing (file name, mode, options),
//! file name resolution to a boot path, option negotiation (RFC 2347/2348/2349/7440), OACK and ERROR encoding.
//!
//! Input: one size byte (the size of the requested file: 0, or `byte * 1_000_003`), then the packet.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&size, packet)) = data.split_first() else { return };
    tandem::node::boot::tftp::fuzz::packet(packet, u64::from(size) * 1_000_003);
});
