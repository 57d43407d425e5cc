//! The state in etcd, for a fleet of controllers (`dimmer serve --store
//! etcd://…`): the same rollouts, revision and audit chain as the SQLite
//! store, under one prefix.
//!
//! Every write is fenced: it is one etcd transaction that also compares the
//! leader's election key (its create revision), so a controller that lost
//! its lease — or never led — cannot write, ever; and compares the audit
//! head's mod revision, so two writers can never fork the chain. A write
//! without a fence is refused before it is sent.
//!
//! The store's calls are synchronous, as the SQLite store's are: each runs
//! its request on the Tokio runtime it is called from (which must be the
//! multi-thread one), under `timeout`, so a dead or partitioned etcd costs
//! one timeout, never a stall.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use etcd_client::{Client, Compare, CompareOp, GetOptions, Txn, TxnOp};

use dimmer_decide::engine::RolloutState;

use super::audit::{self, chain_next, AuditKey, AuditRecord, ChainError, Entry, Head, GENESIS};
use super::backend::{Change, StateStore, StoreError};

/// The leader's claim: its election key and that key's create revision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: Vec<u8>,
    pub create_revision: i64,
}

pub struct EtcdStore {
    client: Client,
    key: AuditKey,
    prefix: String,
    timeout: Duration,
    fence: Arc<Mutex<Option<Fence>>>,
}

fn etcd(e: impl std::fmt::Display) -> StoreError {
    StoreError::Etcd(e.to_string())
}

/// A member that is down, or a Raft leader that changed under the
/// request: another attempt may succeed. A write whose answer was lost may
/// have been applied, so a transition checks first whether its record is
/// already the head before it writes again (see [`EtcdStore::transition`]).
fn retryable(e: &str) -> bool {
    let e = e.to_ascii_lowercase();
    e.contains("connect error") || e.contains("unavailable") || e.contains("leader changed")
}

/// TLS to etcd: the CA that signed its certificate, and this controller's
/// own certificate and key when etcd asks for one (`--client-cert-auth`).
#[derive(Clone, Debug)]
pub struct EtcdTls {
    pub ca_pem: Vec<u8>,
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

impl EtcdStore {
    /// Connects to `endpoints` (`host:port`, or `https://host:port` with
    /// `tls`), keeping everything under `prefix` (`/dimmer/`).
    pub async fn connect(
        endpoints: &[String],
        prefix: &str,
        key: AuditKey,
        timeout: Duration,
        tls: Option<EtcdTls>,
    ) -> Result<EtcdStore, StoreError> {
        let mut options = etcd_client::ConnectOptions::new()
            .with_connect_timeout(timeout)
            .with_timeout(timeout)
            .with_keep_alive(Duration::from_secs(1), timeout);
        let tls_without_identity = tls.as_ref().is_some_and(|t| t.identity.is_none());
        if let Some(tls) = tls {
            let mut t = etcd_client::TlsOptions::new()
                .ca_certificate(etcd_client::Certificate::from_pem(tls.ca_pem));
            if let Some((cert, key)) = tls.identity {
                t = t.identity(etcd_client::Identity::from_pem(cert, key));
            }
            options = options.with_tls(t);
        }
        let mut client = tokio::time::timeout(timeout, Client::connect(endpoints, Some(options)))
            .await
            .map_err(|_| etcd(format!("no answer from {endpoints:?} within {timeout:?}")))?
            .map_err(etcd)?;
        // The connection is made lazily: one read now, so that a refused
        // certificate is said at start, plainly.
        let probe = tokio::time::timeout(
            timeout,
            client.get(prefix, Some(GetOptions::new().with_limit(1))),
        )
        .await
        .map_err(|_| etcd(format!("no answer from {endpoints:?} within {timeout:?}")))?;
        if let Err(e) = probe {
            let text = format!("{e:?}");
            let hint = if text.contains("BadCertificate") || text.contains("CertificateRequired") {
                ": etcd refused this controller's certificate (give --etcd-cert and --etcd-key, signed by a CA etcd trusts)"
            } else if tls_without_identity && (text.contains("closed") || text.contains("Canceled"))
            {
                ": etcd closed the connection: it may ask clients for a certificate (--client-cert-auth); give --etcd-cert and --etcd-key"
            } else if text.contains("UnknownIssuer") || text.contains("NotValidForName") {
                ": etcd's certificate is not one --etcd-ca vouches for (or not for this address)"
            } else {
                ""
            };
            return Err(etcd(format!("{e}{hint}")));
        }
        Ok(EtcdStore {
            client,
            key,
            prefix: prefix.to_owned(),
            timeout,
            fence: Arc::new(Mutex::new(None)),
        })
    }

    /// A client on the same connection, for the election and the watch.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// Where the election decides (and so who may write).
    pub fn fence_handle(&self) -> Arc<Mutex<Option<Fence>>> {
        Arc::clone(&self.fence)
    }

    fn fence(&self) -> Option<Fence> {
        self.fence.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn k(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// Runs `attempt` to completion from synchronous code, under the
    /// timeout, again while etcd is unavailable: the client does not retry
    /// a request that went to a dead member, and the next attempt goes to
    /// another.
    fn run<T, F, Fut>(&self, attempt: F) -> Result<T, StoreError>
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let handle = tokio::runtime::Handle::try_current()
            .map_err(|_| etcd("the etcd store is used outside a Tokio runtime"))?;
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            return Err(etcd("the etcd store needs Tokio's multi-thread runtime"));
        }
        let timeout = self.timeout;
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                let retrying = async {
                    loop {
                        match attempt().await {
                            Err(StoreError::Etcd(e)) if retryable(&e) => {
                                tracing::debug!(error = %e, "etcd: retrying");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                            other => return other,
                        }
                    }
                };
                tokio::time::timeout(timeout, retrying)
                    .await
                    .map_err(|_| etcd(format!("no answer within {timeout:?}")))?
            })
        })
    }

    async fn get_one(&self, key: String) -> Result<Option<(Vec<u8>, i64)>, StoreError> {
        let mut c = self.client.clone();
        let resp = c.get(key, None).await.map_err(etcd)?;
        Ok(resp
            .kvs()
            .first()
            .map(|kv| (kv.value().to_vec(), kv.mod_revision())))
    }

    async fn get_prefix(&self, prefix: String) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut c = self.client.clone();
        let resp = c
            .get(prefix, Some(GetOptions::new().with_prefix()))
            .await
            .map_err(etcd)?;
        Ok(resp.kvs().iter().map(|kv| kv.value().to_vec()).collect())
    }

    async fn head_now(&self) -> Result<(Head, i64), StoreError> {
        match self.get_one(self.k("head")).await? {
            Some((bytes, rev)) => Ok((serde_json::from_slice(&bytes).map_err(etcd)?, rev)),
            None => Ok((
                Head {
                    seq: 0,
                    hash: GENESIS.to_owned(),
                    mac: String::new(),
                },
                0,
            )),
        }
    }

    async fn revision_now(&self) -> Result<u64, StoreError> {
        Ok(self
            .get_one(self.k("revision"))
            .await?
            .and_then(|(v, _)| String::from_utf8(v).ok()?.parse().ok())
            .unwrap_or(0))
    }

    /// The compares every write makes: still the leader, and (for writes
    /// that extend the log) the head unchanged since it was read.
    fn fenced(&self, head_rev: Option<i64>) -> Result<Vec<Compare>, StoreError> {
        let fence = self
            .fence()
            .ok_or_else(|| StoreError::Fenced("it holds no leader lease".into()))?;
        let mut when = vec![Compare::create_revision(
            fence.key,
            CompareOp::Equal,
            fence.create_revision,
        )];
        if let Some(rev) = head_rev {
            when.push(Compare::mod_revision(self.k("head"), CompareOp::Equal, rev));
        }
        Ok(when)
    }
}

impl StateStore for EtcdStore {
    fn audit_key(&self) -> &AuditKey {
        &self.key
    }

    fn head(&self) -> Result<Head, StoreError> {
        self.run(|| async { Ok(self.head_now().await?.0) })
    }

    /// The head is kept in etcd beside the log: the same record the log
    /// ends with, written in the same transaction.
    fn head_file(&self) -> Result<Option<Head>, StoreError> {
        self.run(|| async {
            let (head, rev) = self.head_now().await?;
            Ok((rev > 0).then_some(head))
        })
    }

    fn verify(&self) -> Result<Result<usize, ChainError>, StoreError> {
        let records = self.audit(None)?;
        let head = self.head_file()?;
        Ok(audit::verify_keyed(&records, &self.key, head.as_ref()))
    }

    fn revision(&self) -> Result<u64, StoreError> {
        self.run(|| self.revision_now())
    }

    fn rollouts(&self) -> Result<Vec<RolloutState>, StoreError> {
        self.run(|| async {
            let values = self.get_prefix(self.k("rollouts/")).await?;
            values
                .iter()
                .map(|v| {
                    serde_json::from_slice(v).map_err(|source| StoreError::Corrupt {
                        name: String::from_utf8_lossy(v).chars().take(40).collect(),
                        source,
                    })
                })
                .collect()
        })
    }

    fn audit(&self, rollout: Option<&str>) -> Result<Vec<AuditRecord>, StoreError> {
        self.run(|| async {
            let values = self.get_prefix(self.k("audit/")).await?;
            let mut out = Vec::with_capacity(values.len());
            for v in values {
                let rec: AuditRecord = serde_json::from_slice(&v).map_err(etcd)?;
                if rollout.is_none_or(|r| r == rec.rollout) {
                    out.push(rec);
                }
            }
            // Keys are zero-padded sequence numbers: already in order.
            Ok(out)
        })
    }

    fn transition_many(
        &self,
        changes: &mut [Change<'_>],
        bump: bool,
        now_ms: u64,
    ) -> Result<u64, StoreError> {
        // Refused before anything is read or sent.
        self.fenced(None)?;
        let planned: Vec<(&str, Option<RolloutState>, Entry<'_>)> = changes
            .iter()
            .map(|c| (c.name, c.state.clone(), c.entry.clone()))
            .collect();
        let planned = &planned;
        // The last record and the revision of the last attempt: if an
        // attempt whose answer was lost was applied, its last record is the
        // head now, and nothing must be appended again.
        let tried: Mutex<Option<(String, u64)>> = Mutex::new(None);
        let tried = &tried;
        let revision = self.run(|| async move {
            let (head, head_rev) = self.head_now().await?;
            let last = tried.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some((hash, revision)) = last {
                if head.hash == hash {
                    return Ok(revision);
                }
            }
            if !self.key.signs(&head) {
                return Err(StoreError::KeyMismatch { seq: head.seq });
            }
            let mut revision = self.revision_now().await?;
            let mut ops = Vec::new();
            if bump {
                revision += 1;
                ops.push(TxnOp::put(self.k("revision"), revision.to_string(), None));
            }
            let (mut seq, mut hash) = (head.seq, head.hash.clone());
            let mut new_head = head.clone();
            for (name, state_now, entry) in planned {
                let key = self.k(&format!("rollouts/{name}"));
                match state_now {
                    Some(state) => {
                        let mut state = state.clone();
                        if bump {
                            state.revision = revision;
                            state.revision_ms = now_ms;
                        }
                        let json =
                            serde_json::to_vec(&state).map_err(|source| StoreError::Corrupt {
                                name: (*name).to_owned(),
                                source,
                            })?;
                        ops.push(TxnOp::put(key, json, None));
                    }
                    None => ops.push(TxnOp::delete(key, None)),
                }
                let rec = chain_next(seq, hash, entry.clone(), now_ms, &self.key);
                new_head = Head::of(std::slice::from_ref(&rec));
                (seq, hash) = (rec.seq, rec.hash.clone());
                ops.push(TxnOp::put(
                    self.k(&format!("audit/{:020}", rec.seq)),
                    serde_json::to_vec(&rec).map_err(etcd)?,
                    None,
                ));
            }
            ops.push(TxnOp::put(
                self.k("head"),
                serde_json::to_vec(&new_head).map_err(etcd)?,
                None,
            ));
            let txn = Txn::new().when(self.fenced(Some(head_rev))?).and_then(ops);
            *tried.lock().unwrap_or_else(|e| e.into_inner()) =
                Some((new_head.hash.clone(), revision));
            let mut c = self.client.clone();
            let resp = c.txn(txn).await.map_err(etcd)?;
            if resp.succeeded() {
                Ok(revision)
            } else {
                Err(StoreError::Fenced(
                    "its lease is gone or another controller wrote first".into(),
                ))
            }
        })?;
        if bump {
            for c in changes.iter_mut() {
                if let Some(state) = &mut c.state {
                    state.revision = revision;
                    state.revision_ms = now_ms;
                }
            }
        }
        Ok(revision)
    }

    fn save_quietly(&self, state: &RolloutState) -> Result<(), StoreError> {
        self.fenced(None)?;
        self.run(|| async {
            let json = serde_json::to_vec(state).map_err(|source| StoreError::Corrupt {
                name: state.spec.name.clone(),
                source,
            })?;
            let key = self.k(&format!("rollouts/{}", state.spec.name));
            // Only an existing rollout: a quiet save must not resurrect one
            // deleted meanwhile.
            let mut when = self.fenced(None)?;
            when.push(Compare::create_revision(key.clone(), CompareOp::Greater, 0));
            let txn = Txn::new()
                .when(when)
                .and_then([TxnOp::put(key, json, None)]);
            let mut c = self.client.clone();
            let resp = c.txn(txn).await.map_err(etcd)?;
            if resp.succeeded() {
                Ok(())
            } else {
                Err(StoreError::Fenced(
                    "its lease is gone (or the rollout was deleted meanwhile)".into(),
                ))
            }
        })
    }
}
