//! The service as devices, MDM servers and operators meet it: the real `enrollca` binary on
//! 127.0.0.1, driven over HTTP(S) by third-party clients (scepclient, certmonger, strongSwan,
//! certbot, lego) and by our own. One test binary: the suite links once, not once per file.

mod acme;
mod acme_challenges;
mod acme_dns01;
mod attest;
mod attest_android;
mod attest_tpm;
mod attest_yubikey;
mod connections;
mod crl;
mod ddm;
mod mdm_api;
mod nodes;
mod ocsp;
mod openapi;
mod pkcs11;
mod rotation;
mod scep;
mod scep_client;
mod server;
