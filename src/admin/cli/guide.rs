//! What `enrollca profile acme` prints for devices that take no Apple payload: the steps
//! their enrolment agent takes against this installation, with its URLs and the profile's
//! demands.

/// How a device that takes no Apple payload is pointed at an attesting ACME profile: the
/// steps its enrolment agent takes, with this installation's URLs and the profile's demands.
pub(super) struct Agent<'a> {
    pub(super) directory_url: &'a str,
    /// Where the roots for the ACME server's TLS are fetched (`/roots.pem`, plain HTTP).
    pub(super) roots_url: &'a str,
    /// The permanent-identifier the device orders.
    pub(super) identifier: &'a str,
    /// The subject its CSR states.
    pub(super) subject: &'a [(String, String)],
    pub(super) profile: &'a crate::acme::settings::AcmeProfile,
}

impl Agent<'_> {
    fn subject_text(&self) -> String {
        let parts: Vec<String> = self
            .subject
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        parts.join(",")
    }

    /// What an Android MDM agent (a device-owner app, or the EMM's agent) does.
    pub(super) fn android(&self) -> String {
        let a = &self.profile.android;
        format!(
            "# Android Key Attestation (android-key): what the MDM's device-owner app does\n\
             1. Trust the roots at {roots} for the TLS of {dir}.\n\
             2. Create an ACME account and order\n   \
                {{\"identifiers\": [{{\"type\": \"permanent-identifier\", \"value\": \"{id}\"}}]}}.\n\
             3. Generate a P-256 key in the Android Keystore (KeyGenParameterSpec, PURPOSE_SIGN)\n   \
                with setAttestationChallenge(SHA-256(token of the device-attest-01 challenge))\n   \
                and device ID attestation (as device owner: DevicePolicyManager.generateKeyPair\n   \
                with ID_TYPE_SERIAL{imei}); {level}.\n\
             4. Answer the challenge with {{\"attObj\": base64url(CBOR {{\"fmt\": \"android-key\",\n   \
                \"attStmt\": {{\"x5c\": [the key's certificate chain, leaf first]}}}})}}.\n\
             5. Finalize with a CSR for that key, subject {subject}; use the certificate with\n   \
                the Keystore key for TLS client authentication.\n\
             The device must have a locked bootloader and a boot state in {boot}; its attested\n\
             {ident} must be `{id}` (registered with PUT /api/v1/devices/ID).\n",
            roots = self.roots_url,
            dir = self.directory_url,
            id = self.identifier,
            imei = match a.identifier {
                crate::attest::android::AndroidIdentifier::Serial => "",
                _ => ", ID_TYPE_IMEI, ID_TYPE_MEID",
            },
            level = match a.security_level {
                crate::attest::android::RequiredLevel::Strongbox =>
                    "setIsStrongBoxBacked(true): this profile requires StrongBox",
                crate::attest::android::RequiredLevel::TrustedEnvironment =>
                    "the TEE suffices (setIsStrongBoxBacked(true) where the device has StrongBox)",
            },
            subject = self.subject_text(),
            boot = serde_json::to_string(&a.boot_states).unwrap_or_default(),
            ident = serde_json::to_string(&a.identifier).unwrap_or_default(),
        )
    }

    /// What a TPM device runs: step CLI speaks the `tpm` format, with an AIK certificate
    /// from the organisation's attestation CA.
    pub(super) fn tpm(&self) -> String {
        let t = &self.profile.tpm;
        format!(
            "# TPM 2.0 key attestation (tpm): on the device, as an administrator\n\
             curl -fsS {roots} -o enrollca-roots.pem\n\
             step ca certificate '{id}' device.crt --acme {dir} \\\n  \
               --attestation-uri 'tpmkms:name=enrollca-device;attest-by=ak' \\\n  \
               --attestation-ca-url https://AIK-CA --root enrollca-roots.pem\n\
             The AIK (here `ak`) must have a certificate from an AIK CA whose root is in\n\
             acme.attestation_roots: empty subject, extended key usage tcg-kp-AIKCertificate,\n\
             the TPM's manufacturer, model and version in its subjectAltName, and the device's\n\
             {kind} `{id}` (registered with PUT /api/v1/devices/ID). The key must be\n\
             generated in the TPM (fixedTPM, sensitiveDataOrigin), of a type the profile accepts; certInfo's\n\
             extraData is SHA-256 of the challenge's key authorization; {sha1}.\n",
            roots = self.roots_url,
            id = self.identifier,
            dir = self.directory_url,
            kind = match t.identifier {
                crate::attest::TpmIdentifier::PermanentIdentifier => "PermanentIdentifier",
                crate::attest::TpmIdentifier::HardwareModuleName => "HardwareModuleName",
            },
            sha1 = if t.accept_sha1 {
                "RS1 (SHA-1) signatures are accepted"
            } else {
                "the AIK signs with RS256 or ES256 (SHA-1 is refused)"
            },
        )
    }

    /// What a YubiKey's holder runs: step CLI speaks the `step` format.
    pub(super) fn yubikey(&self) -> String {
        let y = &self.profile.yubikey;
        let mut demands = Vec::new();
        if y.require_pin {
            demands.push("--pin-policy once (or always)");
        }
        if y.require_touch {
            demands.push("--touch-policy always (or cached)");
        }
        format!(
            "# YubiKey PIV attestation (step): with the YubiKey inserted\n\
             curl -fsS {roots} -o enrollca-roots.pem\n\
             step ca certificate '{id}' yubikey.crt --acme {dir} \\\n  \
               --attestation-uri 'yubikey:slot-id=9a' --root enrollca-roots.pem\n\
             The key in slot 9a is generated on the YubiKey (`ykman piv keys generate`{demand})\n\
             and of a type the profile accepts; its serial number ({id}) must be registered with\n\
             PUT /api/v1/devices/ID. The YubiKey signs the challenge's key authorization, so\n\
             step asks for its PIN (and a touch, per its policy).\n",
            roots = self.roots_url,
            id = self.identifier,
            dir = self.directory_url,
            demand = if demands.is_empty() {
                String::new()
            } else {
                format!(" with {}: this profile requires it", demands.join(" and "))
            },
        )
    }
}
