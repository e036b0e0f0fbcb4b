//! Finalization (RFC 8555 §7.4), certificate download and revocation (§7.6).

use super::*;

impl AcmeService {
    /// finalize: the CSR must name exactly the order's identifiers; the certificate and the
    /// order's completion are one write.
    pub async fn finalize(&self, req: &Signed, id: &str) -> Result<OrderView, AcmeError> {
        let (profile, jws) = (&*req.profile, &req.jws);
        let (account, order) = self.signed_order(req, id).await?;
        // Read once: the status and, for a device, the proof the CSR is checked against.
        let authzs = self.order_authzs(&order.value).await?;
        let view = self.view_of(order.value.clone(), &authzs);
        if view.status != OrderStatus::Ready {
            return Err(AcmeError::new(
                ProblemType::OrderNotReady,
                format!("the order is {:?}, not ready", view.status).to_lowercase(),
            ));
        }
        let req: Finalize = jws.json()?;
        let der = URL_SAFE_NO_PAD
            .decode(req.csr.trim_end_matches('='))
            .map_err(|_| AcmeError::new(ProblemType::BadCsr, "`csr` is not base64url"))?;
        let csr = Csr::from_der(&der)?;
        let identity = match order.value.identifiers.as_slice() {
            [id] if id.kind == IdentifierType::PermanentIdentifier => {
                Some(check_device_csr(&csr, &order.value, &authzs, profile)?)
            }
            identifiers => {
                check_csr_names(&csr, identifiers)?;
                None
            }
        };

        let Some(running) = self.finalizing.start(id) else {
            return Err(AcmeError::new(
                ProblemType::OrderNotReady,
                "the order is already being finalized",
            ));
        };
        let ready_version = order.version;
        // A ClientIdentifier is used up with the certificate, in the same write.
        let use_up = match &order.value.client_identifier {
            None => None,
            Some(key) => {
                let doc = CLIENT_IDENTIFIERS
                    .get(self.store().as_ref(), key)
                    .await?
                    .ok_or_else(|| {
                        AcmeError::new(
                            ProblemType::RejectedIdentifier,
                            "the order's ClientIdentifier was used by another order",
                        )
                    })?;
                Some(client_identifiers::use_up(key, doc.version))
            }
        };
        let done = order.value.clone();
        let order_id = id.to_owned();
        let account_id = account.id.clone();
        let issued = self
            .ca
            .issue(IssueRequest {
                device: order.value.device.clone(),
                account: Some(account.id.clone()),
                completes: Some(Box::new(move |record: &CertRecord| {
                    let mut valid = done.clone();
                    valid.state = OrderState::Valid {
                        certificate: record.serial.clone(),
                    };
                    let mut writes = vec![
                        ORDERS.replace(&order_id, ready_version, &valid),
                        ACCOUNT_CERTS.create(&format!("{account_id}/{}", record.serial), &()),
                    ];
                    writes.extend(use_up.clone());
                    writes
                })),
                identity,
                ..IssueRequest::new(
                    csr,
                    profile.template.clone(),
                    profile.config.issuer,
                    Protocol::Acme,
                )
            })
            .await;
        let outcome = match issued {
            Ok(issued) => {
                let mut valid = order.value;
                valid.state = OrderState::Valid {
                    certificate: issued.record.serial,
                };
                Ok(OrderView {
                    order: valid,
                    status: OrderStatus::Valid,
                })
            }
            // Another order used the ClientIdentifier first.
            Err(IssueError::Store(StoreError::Conflict { kind, .. }))
                if kind == CLIENT_IDENTIFIERS.kind() =>
            {
                Err(AcmeError::new(
                    ProblemType::RejectedIdentifier,
                    "the order's ClientIdentifier was used by another order",
                ))
            }
            // Another finalization won the race for the order.
            Err(IssueError::Store(StoreError::Conflict { .. })) => Err(AcmeError::new(
                ProblemType::OrderNotReady,
                "the order was finalized concurrently",
            )),
            // Our failure: the order stays ready, and the client may finalize it again.
            Err(e) if e.kind().is_ours() => Err(AcmeError::from(e)),
            Err(e) => {
                let problem = AcmeError::from(e);
                let mut failed = order.value;
                failed.state = OrderState::Invalid {
                    error: problem.clone(),
                };
                self.store()
                    .write_docs(vec![ORDERS.replace(id, ready_version, &failed)])
                    .await?;
                Err(problem)
            }
        };
        drop(running);
        outcome
    }

    /// The certificate chain (PEM, leaf first) for its account, and whether an alternate
    /// chain exists. The alternate (after a root rotation) adds the cross certificate that
    /// leads to the other root.
    pub async fn certificate(
        &self,
        req: &Signed,
        serial: &str,
        alternate: bool,
    ) -> Result<(String, bool), AcmeError> {
        let account = self.account_signer(req).await?.value;
        let serial: Serial = serial
            .parse()
            .map_err(|_| AcmeError::not_found("certificate"))?;
        let record = self
            .store()
            .certificate(&serial)
            .await?
            .filter(|r| r.protocol == Protocol::Acme)
            .ok_or_else(|| AcmeError::not_found("certificate"))?;
        if record.account.as_deref() != Some(account.id.as_str()) {
            return Err(AcmeError::unauthorized(
                "the certificate belongs to another account",
            ));
        }
        let issuers = self.ca.issuers();
        let issuer = issuers.get(&record.issuer).ok_or_else(|| {
            AcmeError::internal(format!("issuer {} is not loaded", record.issuer))
        })?;
        let trust = self.ca.trust();
        let cross = trust.cross_above(issuer.top());
        if alternate && cross.is_none() {
            return Err(AcmeError::not_found("alternate chain"));
        }
        let chain = std::iter::once(record.der.as_slice())
            .chain(issuer.chain())
            .chain(cross.filter(|_| alternate))
            .map(|der| crate::encoding::to_pem("CERTIFICATE", der))
            .collect();
        Ok((chain, cross.is_some() && !alternate))
    }

    /// revokeCert (RFC 8555 §7.6): by the account that ordered the certificate, or by a JWS
    /// signed with the certificate's own key.
    pub async fn revoke(&self, req: &Signed) -> Result<(), AcmeError> {
        let jws = &req.jws;
        let signer = self.authenticate(req, KeyUse::Either).await?;
        let req: Revoke = jws.json()?;
        let der = URL_SAFE_NO_PAD
            .decode(req.certificate.trim_end_matches('='))
            .map_err(|_| AcmeError::malformed("`certificate` is not base64url DER"))?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der)
            .map_err(|_| AcmeError::malformed("`certificate` is not an X.509 certificate"))?;
        let unknown = || AcmeError::not_found("certificate issued by this CA");
        let serial = Serial::from_bytes(cert.raw_serial()).map_err(|_| unknown())?;
        let record = self
            .store()
            .certificate(&serial)
            .await?
            .filter(|r| r.der == der)
            .ok_or_else(unknown)?;
        let allowed = match &signer {
            Signer::Account(a) => record.account.as_deref() == Some(a.value.id.as_str()),
            Signer::Key(jwk) => jwk.is_key_of(cert.public_key()),
        };
        if !allowed {
            return Err(AcmeError::unauthorized(
                "only the ordering account or the certificate's key may revoke it",
            ));
        }
        let reason = match req.reason {
            None => RevocationReason::Unspecified,
            Some(code) => RevocationReason::from_code(code)
                .filter(|r| {
                    !matches!(
                        r,
                        RevocationReason::CaCompromise
                            | RevocationReason::CertificateHold
                            | RevocationReason::AaCompromise
                    )
                })
                .ok_or_else(|| {
                    AcmeError::new(
                        ProblemType::BadRevocationReason,
                        format!("reason code {code} is not accepted (0, 1, 3, 4, 5, 9)"),
                    )
                })?,
        };
        match self.ca.revoke(&serial, reason, self.now()).await {
            Ok(_) => {
                tracing::info!(%serial, reason = %reason, "revoked over ACME");
                Ok(())
            }
            Err(StoreError::AlreadyRevoked(_)) => Err(AcmeError::new(
                ProblemType::AlreadyRevoked,
                format!("certificate {serial} is already revoked"),
            )),
            Err(e) => Err(e.into()),
        }
    }
}

/// A device order's CSR asks for no names: the device is named by the PermanentIdentifier
/// the certificate gets from the order. Its key must be the attested one or, for a device
/// that could not attest, at least of a type the profile accepts.
fn check_device_csr(
    csr: &Csr,
    order: &Order,
    authzs: &[Authorization],
    profile: &Profile,
) -> Result<DeviceIdentity, AcmeError> {
    let [authz] = authzs else {
        return Err(AcmeError::internal(format!(
            "device order {} has {} authorizations",
            order.id,
            authzs.len()
        )));
    };
    let authz_id = &authz.id;
    if let Some(san) = csr.sans.first() {
        return Err(AcmeError::new(
            ProblemType::BadCsr,
            format!(
                "the CSR asks for {san}; a device certificate is named by its permanent identifier only"
            ),
        ));
    }
    let attestation = match authz.proof.clone() {
        None => {
            return Err(AcmeError::internal(format!(
                "valid authz {authz_id} has no proof"
            )));
        }
        Some(DeviceProof::Unattested {
            permanent_identifier,
        }) => {
            let key_types = &profile.config.attestation_key_types;
            if !KeyType::of(csr.key).is_some_and(|k| key_types.contains(&k)) {
                return Err(AcmeError::new(
                    ProblemType::BadCsr,
                    format!("the CSR's key is not one of the profile's key types {key_types:?}"),
                ));
            }
            return Ok(DeviceIdentity {
                permanent_identifier,
                facts: None,
            });
        }
        Some(DeviceProof::Attested(attestation)) => attestation,
    };
    if rcgen::PublicKeyData::subject_public_key_info(&csr.spki) != attestation.spki {
        return Err(AcmeError::new(
            ProblemType::BadCsr,
            "the CSR's key is not the key the device attested",
        ));
    }
    // A ClientIdentifier only stood for the device: the certificate names the device by
    // the attested serial number (or UDID) it was checked against, never by that value.
    let permanent_identifier = match authz.hardware_ids.as_slice() {
        [] => authz.identifier.value.clone(),
        registered => {
            let attested = |v: &Option<String>| {
                v.clone()
                    .filter(|v| registered.iter().any(|r| r.eq_ignore_ascii_case(v)))
            };
            attested(&attestation.facts.serial)
                .or_else(|| attested(&attestation.facts.udid))
                .ok_or_else(|| {
                    AcmeError::internal(format!("authz {authz_id} attested another device"))
                })?
        }
    };
    Ok(DeviceIdentity {
        permanent_identifier,
        facts: Some(attestation.facts),
    })
}

/// The names a CSR asks for (subjectAltNames and the common name) must be exactly the order's.
fn check_csr_names(csr: &Csr, identifiers: &[Identifier]) -> Result<(), AcmeError> {
    let mut asked = BTreeSet::new();
    for san in &csr.sans {
        match san {
            San::Dns(name) => asked.insert(Identifier::dns(name)),
            San::Ip(ip) => asked.insert(Identifier::ip(*ip)),
            other => {
                return Err(AcmeError::new(
                    ProblemType::BadCsr,
                    format!("the CSR asks for {other}, which an order cannot authorize"),
                ));
            }
        };
    }
    if let Some(cn) = csr.common_name() {
        let id = match cn.parse() {
            Ok(ip) => Identifier::ip(ip),
            Err(_) => Identifier::dns(cn),
        };
        if !identifiers.contains(&id) {
            return Err(AcmeError::new(
                ProblemType::BadCsr,
                format!("the CSR's common name `{cn}` is not one of the order's identifiers"),
            ));
        }
        asked.insert(id);
    }
    let ordered: BTreeSet<Identifier> = identifiers.iter().cloned().collect();
    if asked != ordered {
        let list = |s: &BTreeSet<Identifier>| {
            s.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
        return Err(AcmeError::new(
            ProblemType::BadCsr,
            format!(
                "the CSR names [{}] but the order is for [{}]",
                list(&asked),
                list(&ordered)
            ),
        ));
    }
    Ok(())
}
