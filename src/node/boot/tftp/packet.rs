//! TFTP packets on the wire (RFC 1350, RFC 2347) and option negotiation (RFC 2347, 2348, 2349, 7440).
//!
//! Every packet starts with a 2-byte big-endian opcode:
//!
//! ```text
//! RRQ/WRQ  | 01/02 | filename | 0 | mode | 0 | opt1 | 0 | value1 | 0 | ... |
//! DATA     | 03 | block (2) | 0..blksize bytes |
//! ACK      | 04 | block (2) |
//! ERROR    | 05 | code (2) | message | 0 |
//! OACK     | 06 | opt1 | 0 | value1 | 0 | ... |
//! ```

use std::time::Duration;

pub(super) const RRQ: u16 = 1;
pub(super) const WRQ: u16 = 2;
pub(super) const DATA: u16 = 3;
pub(super) const ACK: u16 = 4;
pub(super) const ERROR: u16 = 5;
pub(super) const OACK: u16 = 6;

/// RFC 2347: a request, options included, fits in 512 octets.
pub(super) const MAX_REQUEST: usize = 512;
/// RFC 1350's block size when no `blksize` is negotiated.
pub(super) const DEFAULT_BLOCK_SIZE: u16 = 512;
/// RFC 2348's range for `blksize`.
pub(super) const MIN_BLOCK_SIZE: u16 = 8;
pub(super) const MAX_BLOCK_SIZE: u16 = 65464;
/// The longest error message we put on the wire.
const MAX_ERROR_MESSAGE: usize = 160;

/// The error codes of RFC 1350 and RFC 2347.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum ErrorCode {
    /// 0: see the message (busy, not ready, read error, timeout, shutting down).
    NotDefined = 0,
    FileNotFound = 1,
    AccessViolation = 2,
    IllegalOperation = 4,
    UnknownTransferId = 5,
    /// 8 (RFC 2347): the client refuses the OACK (UEFI sends it after its size probe).
    OptionRefused = 8,
}

/// The transfer mode of a request. Both are served byte for byte (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Mode {
    Octet,
    Netascii,
}

/// A read request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Request {
    /// The file name as sent (invalid UTF-8 replaced, so it can only fail to resolve).
    pub filename: String,
    pub mode: Mode,
    /// Option names lowercased, values as sent, in the client's order.
    pub options: Vec<(String, String)>,
}

/// A packet arriving on the server's well-known port.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Incoming {
    Read(Request),
    Write,
    /// DATA or ACK: belongs to a transfer, not to the server port.
    Stray,
    Error,
    Oack,
}

/// Why a packet on the server port cannot be served: the code and message of the error to answer with.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refusal {
    pub code: ErrorCode,
    pub message: String,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Refusal { code, message: message.into() }
    }
}

/// Parses a packet received on the server port.
pub(super) fn parse_incoming(packet: &[u8]) -> Result<Incoming, Refusal> {
    let illegal = |message: &str| Refusal::new(ErrorCode::IllegalOperation, message);
    if packet.len() < 2 {
        return Err(illegal("packet too short"));
    }
    let opcode = u16::from_be_bytes([packet[0], packet[1]]);
    if packet.len() > MAX_REQUEST && matches!(opcode, RRQ | WRQ) {
        return Err(illegal("request longer than 512 octets"));
    }
    match opcode {
        RRQ => parse_request(&packet[2..]).map(Incoming::Read),
        WRQ => Ok(Incoming::Write),
        DATA | ACK => Ok(Incoming::Stray),
        ERROR => Ok(Incoming::Error),
        OACK => Ok(Incoming::Oack),
        _ => Err(illegal("unknown opcode")),
    }
}

/// Parses the body of a RRQ: `filename NUL mode NUL (name NUL value NUL)*`. The file name and the mode must
/// be NUL-terminated; a dangling option name without a value, or trailing bytes without a NUL, are ignored
/// (some ROMs pad their requests).
fn parse_request(body: &[u8]) -> Result<Request, Refusal> {
    let illegal = |message: &str| Refusal::new(ErrorCode::IllegalOperation, message);
    let mut fields = Vec::new();
    let mut rest = body;
    while let Some(end) = rest.iter().position(|&b| b == 0) {
        fields.push(&rest[..end]);
        rest = &rest[end + 1..];
    }
    if fields.len() < 2 {
        return Err(illegal("malformed request: file name and mode must end with NUL"));
    }
    let filename = String::from_utf8_lossy(fields[0]).into_owned();
    if filename.is_empty() {
        return Err(Refusal::new(ErrorCode::FileNotFound, "file not found: empty file name"));
    }
    let mode = match String::from_utf8_lossy(fields[1]).to_ascii_lowercase().as_str() {
        "octet" => Mode::Octet,
        "netascii" => Mode::Netascii,
        _ => return Err(illegal("unsupported mode (octet or netascii)")),
    };
    let options = fields[2..]
        .chunks_exact(2)
        .map(|pair| {
            (
                String::from_utf8_lossy(pair[0]).to_ascii_lowercase(),
                String::from_utf8_lossy(pair[1]).into_owned(),
            )
        })
        .collect();
    Ok(Request { filename, mode, options })
}

/// A packet arriving on a transfer's own socket, from its client.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Reply {
    Ack(u16),
    Error {
        code: u16,
        message: String,
    },
    /// Anything else (a stray request, DATA, garbage): ignored.
    Other,
}

pub(super) fn parse_reply(packet: &[u8]) -> Reply {
    if packet.len() < 4 {
        return Reply::Other;
    }
    let number = u16::from_be_bytes([packet[2], packet[3]]);
    match u16::from_be_bytes([packet[0], packet[1]]) {
        ACK => Reply::Ack(number),
        ERROR => {
            let text = &packet[4..];
            let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
            Reply::Error { code: number, message: String::from_utf8_lossy(text).chars().take(100).collect() }
        }
        _ => Reply::Other,
    }
}

/// Writes a DATA packet into `out` (reused between packets).
pub(super) fn encode_data(out: &mut Vec<u8>, block: u16, payload: &[u8]) {
    out.clear();
    out.extend_from_slice(&DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
    out.extend_from_slice(payload);
}

/// An ERROR packet; the message is cut to a short line of text without NULs.
pub(super) fn encode_error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len().min(MAX_ERROR_MESSAGE));
    out.extend_from_slice(&ERROR.to_be_bytes());
    out.extend_from_slice(&(code as u16).to_be_bytes());
    let mut end = message.len().min(MAX_ERROR_MESSAGE);
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    out.extend(message[..end].bytes().map(|b| if b == 0 { b' ' } else { b }));
    out.push(0);
    out
}

/// An OACK packet with the given options, in order.
pub(super) fn encode_oack(options: &[(String, String)]) -> Vec<u8> {
    let mut out = OACK.to_be_bytes().to_vec();
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// The server's limits for negotiation.
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    /// The largest `blksize` granted (8..=65464).
    pub max_block_size: u16,
    /// The largest `windowsize` granted (1..=65535).
    pub max_window_size: u16,
    /// The largest `timeout` granted (1..=255 s).
    pub max_timeout: Duration,
}

/// The outcome of option negotiation: the transfer's parameters and the OACK to send (empty: no OACK, start
/// with DATA 1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Negotiated {
    pub block_size: u16,
    pub window_size: u16,
    /// The client's `timeout`, when it asked for a valid one.
    pub timeout: Option<Duration>,
    pub oack: Vec<(String, String)>,
}

/// Negotiates the request's options for a file of `size` bytes. Only options the client asked for, with
/// values it accepts, are echoed; unknown options and invalid values are ignored (never an error):
///
/// - `blksize` 8..=65464 → `min(asked, max_block_size)`; values above 65464 are treated like 65464.
/// - `windowsize` 1..=65535 → `min(asked, max_window_size)`.
/// - `timeout` 1..=255 → `min(asked, max_timeout)`, used as the retransmission interval.
/// - `tsize` with a number (clients send 0) → the file's size; a non-numeric value (atftp's `tsize enable`) is
///   ignored. For an empty file `tsize` is left out: curl refuses an OACK with `tsize 0` (exit 71), and leaving
///   an option out is always allowed.
pub(super) fn negotiate(options: &[(String, String)], limits: Limits, size: u64) -> Negotiated {
    let mut negotiated =
        Negotiated { block_size: DEFAULT_BLOCK_SIZE, window_size: 1, timeout: None, oack: Vec::new() };
    let mut seen: Vec<&str> = Vec::new();
    for (name, value) in options {
        if seen.contains(&name.as_str()) {
            continue;
        }
        let Ok(number) = value.trim().parse::<u64>() else { continue };
        let answer = match name.as_str() {
            "blksize" if number >= u64::from(MIN_BLOCK_SIZE) => {
                let granted = number.min(u64::from(limits.max_block_size)) as u16;
                negotiated.block_size = granted;
                granted.to_string()
            }
            "windowsize" if (1..=65535).contains(&number) => {
                let granted = number.min(u64::from(limits.max_window_size)) as u16;
                negotiated.window_size = granted;
                granted.to_string()
            }
            "timeout" if (1..=255).contains(&number) => {
                let granted = number.min(limits.max_timeout.as_secs().clamp(1, 255));
                negotiated.timeout = Some(Duration::from_secs(granted));
                granted.to_string()
            }
            "tsize" if size > 0 => size.to_string(),
            _ => continue,
        };
        seen.push(name);
        negotiated.oack.push((name.clone(), answer));
    }
    negotiated
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rrq(fields: &[&str]) -> Vec<u8> {
        let mut out = RRQ.to_be_bytes().to_vec();
        for field in fields {
            out.extend_from_slice(field.as_bytes());
            out.push(0);
        }
        out
    }

    const LIMITS: Limits =
        Limits { max_block_size: 1468, max_window_size: 64, max_timeout: Duration::from_secs(5) };

    fn options(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(n, v)| (n.to_string(), v.to_string())).collect()
    }

    #[test]
    fn requests_parse_with_options_lowercased() {
        let parsed =
            parse_incoming(&rrq(&["firmware/fw", "OCTET", "TSize", "0", "blksize", "1468"])).unwrap();
        assert_eq!(
            parsed,
            Incoming::Read(Request {
                filename: "firmware/fw".into(),
                mode: Mode::Octet,
                options: options(&[("tsize", "0"), ("blksize", "1468")]),
            })
        );
        let Incoming::Read(request) = parse_incoming(&rrq(&["f", "netascii", "dangling"])).unwrap() else {
            panic!()
        };
        assert_eq!((request.mode, request.options.len()), (Mode::Netascii, 0));
    }

    #[test]
    fn malformed_packets_are_refused() {
        let code = |packet: &[u8]| parse_incoming(packet).unwrap_err().code;
        assert_eq!(code(b""), ErrorCode::IllegalOperation);
        assert_eq!(code(b"\x00"), ErrorCode::IllegalOperation);
        assert_eq!(code(b"\x00\x09abc"), ErrorCode::IllegalOperation);
        assert_eq!(code(b"\x00\x01file-without-nul"), ErrorCode::IllegalOperation);
        assert_eq!(code(b"\x00\x01file\x00octet"), ErrorCode::IllegalOperation);
        assert_eq!(code(&rrq(&["f", "mail"])), ErrorCode::IllegalOperation);
        assert_eq!(code(&rrq(&["", "octet"])), ErrorCode::FileNotFound);
        let long = "x".repeat(600);
        assert_eq!(code(&rrq(&[&long, "octet"])), ErrorCode::IllegalOperation);
        assert_eq!(parse_incoming(b"\x00\x02f\x00octet\x00").unwrap(), Incoming::Write);
        assert_eq!(parse_incoming(b"\x00\x04\x00\x01").unwrap(), Incoming::Stray);
    }

    #[test]
    fn negotiation_echoes_only_what_was_asked_within_limits() {
        let n = negotiate(&[], LIMITS, 100);
        assert_eq!((n.block_size, n.window_size, n.timeout, n.oack.len()), (512, 1, None, 0));

        let n = negotiate(
            &options(&[("tsize", "0"), ("blksize", "9000"), ("windowsize", "4"), ("multicast", "x")]),
            LIMITS,
            1000,
        );
        assert_eq!(n.oack, options(&[("tsize", "1000"), ("blksize", "1468"), ("windowsize", "4")]));
        assert_eq!((n.block_size, n.window_size), (1468, 4));

        // atftp's `tsize enable`, out-of-range values and repeated options are ignored, not refused.
        let n = negotiate(
            &options(&[
                ("tsize", "enable"),
                ("blksize", "7"),
                ("windowsize", "0"),
                ("timeout", "256"),
                ("timeout", "3"),
                ("timeout", "4"),
                ("windowsize", "1000"),
            ]),
            LIMITS,
            1000,
        );
        assert_eq!(n.oack, options(&[("timeout", "3"), ("windowsize", "64")]));
        assert_eq!((n.block_size, n.window_size, n.timeout), (512, 64, Some(Duration::from_secs(3))));

        // A timeout over the server's maximum is lowered, and the OACK says so.
        let n = negotiate(&options(&[("timeout", "255")]), LIMITS, 1000);
        assert_eq!(n.oack, options(&[("timeout", "5")]));
        assert_eq!(n.timeout, Some(Duration::from_secs(5)));

        // An empty file: no `tsize 0` in the OACK (curl refuses it).
        let n = negotiate(&options(&[("tsize", "0"), ("blksize", "1468")]), LIMITS, 0);
        assert_eq!(n.oack, options(&[("blksize", "1468")]));
    }

    #[test]
    fn packets_encode() {
        let mut out = Vec::new();
        encode_data(&mut out, 0x1234, b"ab");
        assert_eq!(out, b"\x00\x03\x12\x34ab");
        assert_eq!(encode_error(ErrorCode::FileNotFound, "no\0pe"), b"\x00\x05\x00\x01no pe\x00");
        assert!(encode_error(ErrorCode::NotDefined, &"é".repeat(200)).len() <= 4 + MAX_ERROR_MESSAGE + 1);
        assert_eq!(encode_oack(&options(&[("tsize", "5")])), b"\x00\x06tsize\x005\x00");
        assert_eq!(parse_reply(b"\x00\x04\xff\xff"), Reply::Ack(65535));
        assert_eq!(
            parse_reply(b"\x00\x05\x00\x08abort\x00"),
            Reply::Error { code: ErrorCode::OptionRefused as u16, message: "abort".into() }
        );
        assert_eq!(parse_reply(b"\x00\x04\x00"), Reply::Other);
    }
}
