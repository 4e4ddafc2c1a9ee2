//! `tandem cert`: make a cluster's TLS certificates, offline (rcgen, ECDSA P-256 keys).
//!
//! - `tandem cert init [--dir D]` makes the cluster CA: `D/ca.pem` (the certificate every node and client is
//!   given: `[tls] ca`, `--ca-cert`) and `D/ca-key.pem` (its key: keep it off the nodes, mode 600). It refuses
//!   to overwrite an existing CA key: every certificate signed by it would be orphaned.
//! - `tandem cert node NAME --dns HOST… --ip IP… [--ca-dir D] [--out-dir O]` makes one node's key and
//!   certificate, signed by the CA of `D`: `O/NAME.pem` and `O/NAME-key.pem` (`[tls] cert` and `key`). The
//!   certificate serves both as the node's server certificate (admin API, peer endpoint) and as its client
//!   certificate (mutual TLS between peers), so it carries both extended key usages. It must name every
//!   address the others dial: the advertised API and peer hosts (`--dns` for names, `--ip` for addresses);
//!   without either, NAME itself is the one DNS name. Making it again replaces the files (renewal: then
//!   `kill -HUP` the node, see docs/security.md).
//!
//! Keys are written mode 600 and certificates 644, each through a temporary file renamed into place, so a node
//! reloading on `SIGHUP` never reads half a file. Nothing here talks to a node.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType, SerialNumber,
};
use serde_json::json;
use time::{Duration, OffsetDateTime};

/// The subcommands of `tandem cert`.
#[derive(Subcommand, Debug)]
pub enum CertCommand {
    /// Make the cluster CA: DIR/ca.pem (give it to every node and client) and DIR/ca-key.pem (keep it safe).
    Init {
        /// Where to write ca.pem and ca-key.pem (created if missing).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// How long the CA is valid, in days.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Make a node's key and certificate, signed by the cluster CA: OUT_DIR/NAME.pem and OUT_DIR/NAME-key.pem.
    Node {
        /// The node's name (the certificate's common name; its DNS name when no --dns or --ip is given).
        name: String,
        /// A DNS name the node is reached by (repeat for several).
        #[arg(long)]
        dns: Vec<String>,
        /// An IP address the node is reached by (repeat for several).
        #[arg(long)]
        ip: Vec<IpAddr>,
        /// The directory of the CA (ca.pem and ca-key.pem, from `tandem cert init`).
        #[arg(long, default_value = ".")]
        ca_dir: PathBuf,
        /// Where to write NAME.pem and NAME-key.pem (default: the CA directory).
        #[arg(long)]
        out_dir: Option<PathBuf>,
        /// How long the certificate is valid, in days.
        #[arg(long, default_value_t = 730)]
        days: u32,
    },
}

/// Runs a `tandem cert` subcommand; `json` prints one JSON object instead of text.
pub fn run(command: &CertCommand, json: bool) -> Result<(), String> {
    match command {
        CertCommand::Init { dir, days } => {
            let made = init(dir, *days)?;
            if json {
                println!("{}", json!({"ca": made.cert, "ca_key": made.key, "not_after": made.not_after}));
            } else {
                println!("cluster CA: {} (valid until {})", made.cert.display(), made.not_after);
                println!(
                    "CA key:     {} (mode 600: keep it off the nodes, offline if you can)",
                    made.key.display()
                );
                println!("next: tandem cert node NAME --dns HOST --ip IP --ca-dir {}", dir.display());
            }
            Ok(())
        }
        CertCommand::Node { name, dns, ip, ca_dir, out_dir, days } => {
            let out_dir = out_dir.as_deref().unwrap_or(ca_dir);
            let request = NodeRequest { name, dns, ips: ip, days: *days };
            let made = node(&request, ca_dir, out_dir)?;
            if json {
                println!(
                    "{}",
                    json!({"cert": made.cert, "key": made.key, "names": made.names, "not_after": made.not_after})
                );
            } else {
                println!(
                    "certificate: {} for {} (valid until {})",
                    made.cert.display(),
                    made.names.join(", "),
                    made.not_after
                );
                println!("key:         {} (mode 600)", made.key.display());
                println!(
                    "config:      [tls] ca = \"{}\", cert = \"{}\", key = \"{}\"",
                    ca_dir.join(CA_CERT).display(),
                    made.cert.display(),
                    made.key.display()
                );
            }
            Ok(())
        }
    }
}

/// The CA certificate's file name in its directory.
pub const CA_CERT: &str = "ca.pem";
/// The CA key's file name in its directory.
pub const CA_KEY: &str = "ca-key.pem";

/// What was written.
#[derive(Debug)]
pub struct Made {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// The names and addresses the certificate is valid for (none for a CA).
    pub names: Vec<String>,
    /// The end of validity (RFC 3339).
    pub not_after: String,
}

/// Makes a cluster CA in `dir`: `ca.pem` and `ca-key.pem` (refused if the key exists).
pub fn init(dir: &Path, days: u32) -> Result<Made, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let (cert_path, key_path) = (dir.join(CA_CERT), dir.join(CA_KEY));
    if key_path.exists() {
        return Err(format!(
            "{} exists already: a new CA would orphan every certificate it signed. To rotate the CA, make the new \
             one in another directory (docs/security.md, \"Rotating the CA\")",
            key_path.display()
        ));
    }
    let mut params = CertificateParams::default();
    let now = OffsetDateTime::now_utc();
    params.distinguished_name.push(DnType::OrganizationName, "Tandem");
    // A name of its own (a date and a random tag): during a rotation, the old and the new CA of a bundle must not
    // share a subject, or a verifier could pick the wrong one for a certificate.
    let tag = hex::encode(rand::random::<[u8; 3]>());
    params.distinguished_name.push(DnType::CommonName, format!("Tandem cluster CA {} {tag}", now.date()));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages =
        vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    let not_after = validity(&mut params, now, days)?;
    let key = KeyPair::generate().map_err(|e| format!("making the CA key: {e}"))?;
    let cert = params.self_signed(&key).map_err(|e| format!("making the CA certificate: {e}"))?;
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(Made { cert: cert_path, key: key_path, names: Vec::new(), not_after })
}

/// What a node certificate is for.
#[derive(Debug)]
pub struct NodeRequest<'a> {
    pub name: &'a str,
    pub dns: &'a [String],
    pub ips: &'a [IpAddr],
    pub days: u32,
}

/// Makes a node's key and certificate, signed by the CA in `ca_dir`, into `out_dir` (replacing them).
pub fn node(request: &NodeRequest<'_>, ca_dir: &Path, out_dir: &Path) -> Result<Made, String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "-_.".contains(c);
    let name = request.name;
    if name.is_empty() || name.len() > 64 || !name.chars().all(allowed) {
        return Err(format!("node name '{name}' must be 1-64 letters, digits, '-', '_' or '.'"));
    }
    let read = |file: &str| {
        let path = ca_dir.join(file);
        std::fs::read_to_string(&path).map_err(|e| {
            format!(
                "reading {}: {e} (make the CA with `tandem cert init --dir {}`)",
                path.display(),
                ca_dir.display()
            )
        })
    };
    let (ca_pem, ca_key_pem) = (read(CA_CERT)?, read(CA_KEY)?);
    let ca_key = KeyPair::from_pem(&ca_key_pem)
        .map_err(|e| format!("{}: not a usable key: {e}", ca_dir.join(CA_KEY).display()))?;
    let issuer = Issuer::from_ca_cert_pem(&ca_pem, ca_key)
        .map_err(|e| format!("{}: not a usable CA certificate: {e}", ca_dir.join(CA_CERT).display()))?;

    let mut names: Vec<String> = request.dns.to_vec();
    if request.dns.is_empty() && request.ips.is_empty() {
        names.push(name.to_string());
    }
    let mut params = CertificateParams::default();
    for dns in &names {
        let not_a_name = || format!("--dns '{dns}' is not a DNS name");
        // rustls's own rule for the names it will check a certificate against.
        rustls_pki_types::DnsName::try_from(dns.as_str()).map_err(|_| not_a_name())?;
        let san = dns.as_str().try_into().map_err(|_| not_a_name())?;
        params.subject_alt_names.push(SanType::DnsName(san));
    }
    for ip in request.ips {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
        names.push(ip.to_string());
    }
    let now = OffsetDateTime::now_utc();
    params.distinguished_name.push(DnType::OrganizationName, "Tandem");
    params.distinguished_name.push(DnType::CommonName, name);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages =
        vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    params.use_authority_key_identifier_extension = true;
    let not_after = validity(&mut params, now, request.days)?;
    let key = KeyPair::generate().map_err(|e| format!("making the node key: {e}"))?;
    let cert = params.signed_by(&key, &issuer).map_err(|e| format!("signing the node certificate: {e}"))?;

    std::fs::create_dir_all(out_dir).map_err(|e| format!("creating {}: {e}", out_dir.display()))?;
    let (cert_path, key_path) =
        (out_dir.join(format!("{name}.pem")), out_dir.join(format!("{name}-key.pem")));
    write_file(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&cert_path, cert.pem().as_bytes(), 0o644)?;
    Ok(Made { cert: cert_path, key: key_path, names, not_after })
}

/// Sets a random serial number and the validity (from an hour ago, for clocks a little behind, to `days`
/// from now); returns the end as RFC 3339.
fn validity(params: &mut CertificateParams, now: OffsetDateTime, days: u32) -> Result<String, String> {
    if days == 0 {
        return Err("--days must be at least 1".into());
    }
    let mut serial = rand::random::<[u8; 16]>();
    serial[0] &= 0x7f; // positive, as RFC 5280 asks
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    params.not_before = now - Duration::hours(1);
    params.not_after = now + Duration::days(i64::from(days));
    let format = time::format_description::well_known::Rfc3339;
    params.not_after.format(&format).map_err(|e| format!("formatting a date: {e}"))
}

/// Writes `bytes` to `path` with `mode`, through a temporary file in the same directory renamed into place.
fn write_file(path: &Path, bytes: &[u8], mode: u32) -> Result<(), String> {
    let file_name = path.file_name().and_then(|n| n.to_str()).unwrap_or("tandem-cert");
    let temporary = path.with_file_name(format!(".{file_name}.{}.tmp", std::process::id()));
    let failed = |e: std::io::Error| format!("writing {}: {e}", path.display());
    let _ = std::fs::remove_file(&temporary);
    let mut file =
        OpenOptions::new().write(true).create_new(true).mode(mode).open(&temporary).map_err(failed)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(failed)?;
    drop(file);
    std::fs::rename(&temporary, path).map_err(failed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use tandem_cluster::tls::{NodeTls, TlsFiles};

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_ca_and_a_node_certificate_load_as_node_tls_with_private_keys() {
        let dir = tempfile::tempdir().unwrap();
        let ca = init(dir.path(), 30).unwrap();
        assert_eq!(mode(&ca.key), 0o600, "the CA key is private");
        assert_eq!(mode(&ca.cert), 0o644);
        let ips = ["127.0.0.1".parse().unwrap()];
        let request = NodeRequest { name: "a", dns: &["node-a.plant".into()], ips: &ips, days: 30 };
        let made = node(&request, dir.path(), &dir.path().join("nodes")).unwrap();
        assert_eq!(mode(&made.key), 0o600, "the node key is private");
        assert_eq!(made.names, ["node-a.plant", "127.0.0.1"]);
        let files = TlsFiles { ca: ca.cert.clone(), cert: made.cert.clone(), key: made.key.clone() };
        let tls = NodeTls::load(files.clone()).expect("the files load and the certificate is the CA's");

        // A renewal replaces the files; a reload then presents the new certificate.
        let before = tls.certificate();
        node(&request, dir.path(), &dir.path().join("nodes")).unwrap();
        tls.reload().unwrap();
        assert_ne!(tls.certificate(), before);

        // A certificate of another CA is refused at load and at reload (the old one stays).
        let other = tempfile::tempdir().unwrap();
        init(other.path(), 30).unwrap();
        let foreign = node(&request, other.path(), other.path()).unwrap();
        let mixed = TlsFiles { cert: foreign.cert.clone(), key: foreign.key.clone(), ..files.clone() };
        let error = NodeTls::load(mixed).unwrap_err().to_string();
        assert!(error.contains("not a valid client certificate of the CA"), "{error}");
        let current = tls.certificate();
        std::fs::copy(&foreign.cert, &made.cert).unwrap();
        assert!(tls.reload().is_err(), "a key that does not match, or a foreign certificate, is refused");
        assert_eq!(tls.certificate(), current, "a failed reload changes nothing");
    }

    #[test]
    fn an_existing_ca_is_never_overwritten_and_bad_requests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        init(dir.path(), 30).unwrap();
        assert!(init(dir.path(), 30).unwrap_err().contains("exists already"));
        for (name, dns) in [("a b", "x"), ("", "x"), ("a", "not a name!")] {
            let request = NodeRequest { name, dns: &[dns.to_string()], ips: &[], days: 30 };
            assert!(node(&request, dir.path(), dir.path()).is_err(), "{name:?} {dns:?}");
        }
        let request = NodeRequest { name: "a", dns: &[], ips: &[], days: 0 };
        assert!(node(&request, dir.path(), dir.path()).is_err());
        let missing = NodeRequest { name: "a", dns: &[], ips: &[], days: 1 };
        assert!(
            node(&missing, &dir.path().join("nowhere"), dir.path()).unwrap_err().contains("tandem cert init")
        );
    }
}
