//! The tls-alpn-01 validator (RFC 8737, RFC 8738 §6 for addresses): a TLS handshake with the
//! identifier on the configured port, offering only ALPN `acme-tls/1`, must present a
//! certificate for exactly that identifier whose critical acmeIdentifier extension holds the
//! SHA-256 of the key authorization.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use der::Decode;
use der::asn1::OctetStringRef;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, SubjectPublicKeyInfoDer, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use super::error::{AcmeError, ProblemType};
use super::model::{Identifier, IdentifierType};
use super::targets::Targets;
use super::validation::{NOT_PERMITTED, lookup};

/// Connecting and the handshake together; a responder that takes longer is not answering.
const TIMEOUT: Duration = Duration::from_secs(10);
const ACME_TLS_1: &[u8] = b"acme-tls/1";
/// id-pe-acmeIdentifier (RFC 8737 §6.1).
const ACME_IDENTIFIER: &str = "1.3.6.1.5.5.7.1.31";

pub struct TlsAlpn01 {
    connector: TlsConnector,
    port: u16,
    targets: Arc<Targets>,
}

impl TlsAlpn01 {
    /// A validator for one profile: it connects only where `targets` permits.
    pub fn new(port: u16, targets: Arc<Targets>) -> anyhow::Result<Self> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        // TLS 1.3 only (RFC 8737 §4 allows 1.2 or 1.3): its handshake signature can be
        // checked against the certificate's bare key, see `SelfSigned`.
        let mut config = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(SelfSigned(provider)))
            .with_no_client_auth();
        config.alpn_protocols = vec![ACME_TLS_1.to_vec()];
        // A resumed session shows no certificate, and every validation must see one.
        config.resumption = rustls::client::Resumption::disabled();
        Ok(Self {
            connector: TlsConnector::from(Arc::new(config)),
            port,
            targets,
        })
    }

    /// Succeeds when the identifier presents the validation certificate for
    /// `key_authorization`.
    pub async fn validate(
        &self,
        identifier: &Identifier,
        key_authorization: &str,
    ) -> Result<(), AcmeError> {
        let sni = match identifier.kind {
            IdentifierType::Dns => identifier.value.clone(),
            IdentifierType::Ip => match identifier.value.parse::<IpAddr>() {
                Ok(ip) => reverse_dns_name(ip),
                Err(_) => {
                    return Err(AcmeError::malformed(format!(
                        "`{}` is not an IP address",
                        identifier.value
                    )));
                }
            },
            // Profiles never offer tls-alpn-01 for devices; `ChallengeType::validates` sees to it.
            IdentifierType::PermanentIdentifier => {
                return Err(AcmeError::malformed(
                    "a permanent identifier cannot be validated by tls-alpn-01",
                ));
            }
        };
        let at = format!("{identifier} port {}", self.port);
        let leaf = tokio::time::timeout(TIMEOUT, self.handshake(&identifier.value, &sni, &at))
            .await
            .map_err(|_| {
                AcmeError::new(
                    ProblemType::Connection,
                    format!("{at}: no TLS handshake within {TIMEOUT:?}"),
                )
            })??;
        check_certificate(&leaf, identifier, key_authorization)
            .map_err(|why| AcmeError::new(ProblemType::IncorrectResponse, format!("{at}: {why}")))
    }

    /// Connects to the first address that accepts and returns the certificate it presents.
    async fn handshake(
        &self,
        host: &str,
        sni: &str,
        at: &str,
    ) -> Result<CertificateDer<'static>, AcmeError> {
        // The client learns that connecting failed, not why (see http-01); the log has it.
        let connection = |e: &dyn std::fmt::Display| {
            tracing::info!(%at, why = %e, "tls-alpn-01 connection failed");
            AcmeError::new(ProblemType::Connection, format!("{at}: could not connect"))
        };
        let tls =
            |e: &dyn std::fmt::Display| AcmeError::new(ProblemType::Tls, format!("{at}: {e}"));
        let server_name = ServerName::try_from(sni.to_owned()).map_err(|e| tls(&e))?;
        let mut last = None;
        let mut stream = None;
        let addrs = match lookup(host, &self.targets).await {
            Ok(addrs) => addrs,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                return Err(AcmeError::new(
                    ProblemType::Connection,
                    format!("{at}: {NOT_PERMITTED}"),
                ));
            }
            Err(e) => return Err(connection(&e)),
        };
        for ip in addrs {
            match TcpStream::connect(SocketAddr::new(ip, self.port)).await {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let stream = match (stream, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(connection(&e)),
            (None, None) => return Err(connection(&"the name has no address")),
        };
        let tls_stream = self
            .connector
            .connect(server_name, stream)
            .await
            .map_err(|e| tls(&e))?;
        let (_, session) = tls_stream.get_ref();
        if session.alpn_protocol() != Some(ACME_TLS_1) {
            return Err(tls(&"the server did not negotiate ALPN `acme-tls/1`"));
        }
        session
            .peer_certificates()
            .and_then(|certs| certs.first())
            .map(|c| c.clone().into_owned())
            .ok_or_else(|| tls(&"the server presented no certificate"))
    }
}

/// RFC 8737 §3 checks on the validation certificate (bytes from whoever answered).
pub fn check_certificate(
    der: &[u8],
    identifier: &Identifier,
    key_authorization: &str,
) -> Result<(), String> {
    let (_, cert) = X509Certificate::from_der(der)
        .map_err(|_| "the certificate is not DER X.509".to_owned())?;
    let names = cert
        .subject_alternative_name()
        .map_err(|e| format!("the certificate's subjectAltName: {e}"))?
        .map(|san| san.value.general_names.clone())
        .unwrap_or_default();
    let names_identifier = match (names.as_slice(), identifier.kind) {
        ([GeneralName::DNSName(name)], IdentifierType::Dns) => {
            name.eq_ignore_ascii_case(&identifier.value)
        }
        ([GeneralName::IPAddress(bytes)], IdentifierType::Ip) => {
            let ip = match bytes.len() {
                4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                _ => None,
            };
            ip.is_some_and(|ip| ip.to_string() == identifier.value)
        }
        _ => false,
    };
    if !names_identifier {
        return Err(format!(
            "the certificate's subjectAltName must be exactly {identifier}"
        ));
    }
    let ext = cert
        .extensions()
        .iter()
        .find(|e| e.oid.to_id_string() == ACME_IDENTIFIER)
        .ok_or("the certificate has no acmeIdentifier extension")?;
    if !ext.critical {
        return Err("the acmeIdentifier extension is not critical".into());
    }
    let digest = OctetStringRef::from_der(ext.value)
        .map_err(|_| "the acmeIdentifier extension is not an OCTET STRING".to_owned())?;
    let expected = ring::digest::digest(&ring::digest::SHA256, key_authorization.as_bytes());
    if digest.as_bytes() == expected.as_ref() {
        Ok(())
    } else {
        Err("the acmeIdentifier does not match the key authorization".into())
    }
}

/// The name an address is asked for in SNI (RFC 8738 §6): its reverse-DNS name.
fn reverse_dns_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, d] = v4.octets();
            format!("{d}.{c}.{b}.{a}.in-addr.arpa")
        }
        IpAddr::V6(v6) => {
            let mut name = String::with_capacity(72);
            for byte in v6.octets().iter().rev() {
                name.push_str(&format!("{:x}.{:x}.", byte & 0xf, byte >> 4));
            }
            name + "ip6.arpa"
        }
    }
}

/// Validation certificates are self-signed by design: what proves control is the
/// acmeIdentifier digest, which only the account's key holder can compute. The handshake's
/// own signature is still checked, so the server holds the certificate's key; it is checked
/// against the bare key because webpki refuses certificates with an unknown critical
/// extension, and acmeIdentifier is one.
#[derive(Debug)]
struct SelfSigned(Arc<CryptoProvider>);

impl ServerCertVerifier for SelfSigned {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        _message: &[u8],
        _cert: &CertificateDer<'_>,
        _dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        Err(rustls::PeerIncompatible::ServerTlsVersionIsDisabledByOurConfig.into())
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let (_, parsed) = X509Certificate::from_der(cert).map_err(|_| {
            rustls::Error::InvalidCertificate(rustls::CertificateError::BadEncoding)
        })?;
        rustls::crypto::verify_tls13_signature_with_raw_key(
            message,
            &SubjectPublicKeyInfoDer::from(parsed.public_key().raw),
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_follow_rfc_8738() {
        assert_eq!(
            reverse_dns_name("127.0.0.1".parse().unwrap()),
            "1.0.0.127.in-addr.arpa"
        );
        assert_eq!(
            reverse_dns_name("2001:db8::1".parse().unwrap()),
            "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa"
        );
    }
}
