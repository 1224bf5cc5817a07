//! [`JobFence`]: at most one `eddy run` per job (source topic), so there are never two writers.
//!
//! A lease in Redis: the key `{redis.prefix}:job-lease:{kafka.topic}` holds a token unique to
//! the holding process, set with `SET NX PX ttl` and renewed every `ttl / 3` by a thread that
//! checks the token first. A second run on the same job waits up to one TTL for the lease (so
//! a restart after a crash, whose lease is no longer renewed, starts once it expires) and then
//! refuses to start while the holder keeps renewing. A holder that cannot renew (the key was
//! taken over, or Redis was unreachable for a whole TTL) sets the run's stop flag and reports
//! [`FenceError::Lost`]: the old writer stops before a new one can have started.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lease length of `eddy run`: a crashed run's job can be taken over this long after its last
/// renewal (renewals every third of it).
pub const LEASE_TTL: Duration = Duration::from_secs(6);

/// Fencing errors.
#[derive(Debug, thiserror::Error)]
pub enum FenceError {
    /// Redis failed while acquiring the lease.
    #[error("job lease: redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// Another run holds the job and keeps renewing it.
    #[error(
        "another eddy run holds the job {key:?} (holder {holder}); refusing to start a second \
         writer"
    )]
    Held {
        /// The lease key.
        key: String,
        /// The holder's token (host, process id, start time).
        holder: String,
    },
    /// The lease was taken over or could not be renewed in time: this run stopped.
    #[error("lost the job lease {key:?}: {why}; stopped so that another run can take over")]
    Lost {
        /// The lease key.
        key: String,
        /// What happened.
        why: String,
    },
}

/// Renews the lease if `ARGV[1]` still holds it.
const RENEW: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("PEXPIRE", KEYS[1], ARGV[2]) else return 0 end"#;
/// Deletes the lease if `ARGV[1]` still holds it.
const RELEASE: &str = r#"if redis.call("GET", KEYS[1]) == ARGV[1] then
  return redis.call("DEL", KEYS[1]) else return 0 end"#;

/// A held job lease, renewed on its own thread until dropped (which releases it).
pub struct JobFence {
    key: String,
    token: String,
    client: redis::Client,
    lost: Arc<Mutex<Option<String>>>,
    done: Arc<(Mutex<bool>, Condvar)>,
    renewer: Option<JoinHandle<()>>,
}

impl JobFence {
    /// The lease key of the job reading `topic`.
    pub fn key(prefix: &str, topic: &str) -> String {
        format!("{prefix}:job-lease:{topic}")
    }

    /// Takes the lease `key` at `redis_url` for `ttl`, waiting up to `ttl` (plus a little)
    /// for a lease no longer renewed to expire. While held, a renewal failure sets `stop`.
    pub fn acquire(
        redis_url: &str,
        key: String,
        ttl: Duration,
        stop: Arc<AtomicBool>,
    ) -> Result<Self, FenceError> {
        let client = redis::Client::open(redis_url)?;
        let mut conn = client.get_connection_with_timeout(Duration::from_secs(5))?;
        let token = format!(
            "{}:pid-{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id(),
            eddy_core::now_ms()
        );
        let ttl_ms = ttl.as_millis().max(1) as u64;
        let deadline = Instant::now() + ttl + ttl / 2;
        loop {
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query(&mut conn)?;
            if set.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                let holder: Option<String> = redis::cmd("GET").arg(&key).query(&mut conn)?;
                return Err(FenceError::Held {
                    key,
                    holder: holder.unwrap_or_default(),
                });
            }
            std::thread::park_timeout((ttl / 10).min(Duration::from_millis(200)));
        }
        tracing::info!(%key, %token, "job lease acquired");
        let lost = Arc::new(Mutex::new(None));
        let done = Arc::new((Mutex::new(false), Condvar::new()));
        let renewer = {
            let (client, key, token) = (client.clone(), key.clone(), token.clone());
            let (lost, done) = (lost.clone(), done.clone());
            std::thread::Builder::new()
                .name("job-lease".into())
                .spawn(move || renew(client, key, token, ttl, stop, lost, done))
                .map_err(|e| FenceError::Lost {
                    key: String::new(),
                    why: format!("cannot start the renewal thread: {e}"),
                })?
        };
        Ok(Self {
            key,
            token,
            client,
            lost,
            done,
            renewer: Some(renewer),
        })
    }

    /// `Err(FenceError::Lost)` once the lease was lost (the run's stop flag is then set).
    pub fn check(&self) -> Result<(), FenceError> {
        match &*self.lost.lock().unwrap_or_else(|e| e.into_inner()) {
            Some(why) => Err(FenceError::Lost {
                key: self.key.clone(),
                why: why.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// The renewal loop: every `ttl / 3`, renew if still ours; on a takeover, or no successful
/// renewal for `ttl` (Redis unreachable: someone else may hold it by now), record why, set
/// `stop` and end.
fn renew(
    client: redis::Client,
    key: String,
    token: String,
    ttl: Duration,
    stop: Arc<AtomicBool>,
    lost: Arc<Mutex<Option<String>>>,
    done: Arc<(Mutex<bool>, Condvar)>,
) {
    let every = ttl / 3;
    let ttl_ms = ttl.as_millis().max(1) as u64;
    let mut renewed = Instant::now();
    let mut conn = None;
    loop {
        {
            let (lock, cv) = &*done;
            let finished = lock.lock().unwrap_or_else(|e| e.into_inner());
            let (finished, _) = cv
                .wait_timeout_while(finished, every, |f| !*f)
                .unwrap_or_else(|e| e.into_inner());
            if *finished {
                return;
            }
        }
        let result: Result<i64, redis::RedisError> = (|| {
            if conn.is_none() {
                conn = Some(client.get_connection_with_timeout(every)?);
            }
            let c = conn.as_mut().expect("just set");
            c.set_read_timeout(Some(every))?;
            redis::cmd("EVAL")
                .arg(RENEW)
                .arg(1)
                .arg(&key)
                .arg(&token)
                .arg(ttl_ms)
                .query(c)
        })();
        let why = match result {
            Ok(1) => {
                renewed = Instant::now();
                continue;
            }
            Ok(_) => "another run took the lease over".to_owned(),
            Err(e) => {
                conn = None;
                if renewed.elapsed() < ttl {
                    tracing::warn!(%key, error = %e, "job lease renewal failed; retrying");
                    continue;
                }
                format!("not renewed for {ttl:?}: {e}")
            }
        };
        tracing::error!(%key, %why, "job lease lost; stopping");
        *lost.lock().unwrap_or_else(|e| e.into_inner()) = Some(why);
        stop.store(true, Ordering::SeqCst);
        return;
    }
}

impl Drop for JobFence {
    /// Stops renewing and releases the lease if still held.
    fn drop(&mut self) {
        let (lock, cv) = &*self.done;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(h) = self.renewer.take() {
            let _ = h.join();
        }
        let released: Result<i64, redis::RedisError> = self
            .client
            .get_connection_with_timeout(Duration::from_secs(2))
            .and_then(|mut c| {
                redis::cmd("EVAL")
                    .arg(RELEASE)
                    .arg(1)
                    .arg(&self.key)
                    .arg(&self.token)
                    .query(&mut c)
            });
        if let Err(e) = released {
            tracing::warn!(key = %self.key, error = %e, "cannot release the job lease (it expires)");
        }
    }
}
