//! Where ACME keeps its state: each kind of document, with the type it holds, said once.

use super::client_identifiers::ClientIdentifier;
use super::model::{Account, Authorization, EabKey, Order};
use crate::store::{Collection, DocKind};

pub(super) const ACCOUNTS: Collection<Account> = Collection::new(DocKind::AcmeAccount);
/// `profile/thumbprint` → account id: a key has one account per profile.
pub(super) const ACCOUNT_KEYS: Collection<String> = Collection::new(DocKind::AcmeAccountKey);
pub(super) const ORDERS: Collection<Order> = Collection::new(DocKind::AcmeOrder);
pub(super) const AUTHZS: Collection<Authorization> = Collection::new(DocKind::AcmeAuthz);
/// `account/order`: an account's orders, in id order. Written once, never updated.
pub(super) const ACCOUNT_ORDERS: Collection<()> = Collection::new(DocKind::AcmeAccountOrder);
/// `account/serial`: what an account was issued, so that it is never purged as abandoned.
pub(super) const ACCOUNT_CERTS: Collection<()> = Collection::new(DocKind::AcmeAccountCert);
pub(super) const EAB_KEYS: Collection<EabKey> = Collection::new(DocKind::AcmeEabKey);
/// Hex SHA-256 of a one-time ClientIdentifier → the device it was minted for.
pub(super) const CLIENT_IDENTIFIERS: Collection<ClientIdentifier> =
    Collection::new(DocKind::AcmeClientIdentifier);
