//! The users, sessions and channels a run drives, made once before any load starts.
//!
//! Against a node every user signs up and logs in exactly once (argon2 costs ~19 MiB and tens
//! of ms per hash, so the number of hashes in flight is capped), and connections reuse the
//! session: several connections of one user are several tabs of one device. Against the relay
//! (`--relay`) there is no HTTP at all: ids are made up and the token tells the relay which
//! channels the connection joins (see `relay`).

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use futures_util::stream::{self, StreamExt};
use ringchat_client::{ClientError, HttpClient};

/// Password of every benchmark user (8+ bytes, as the API demands).
const PASSWORD: &str = "loadgen-password";
/// Longest any single setup call may take before the run gives up.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// How users group into channels.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Distinct users.
    pub users: usize,
    /// Pair users 0–1, 2–3, … into DM channels.
    pub dm_pairs: bool,
    /// Put users 0..g, g..2g, … into groups of this size (0: no groups).
    pub group_size: usize,
}

/// One user: its session and the channels it belongs to.
#[derive(Debug, Clone)]
pub struct BenchUser {
    /// Server user id.
    pub user_id: String,
    /// Bearer token (relay: the made-up token naming its channels).
    pub token: String,
    /// Node its connections go to.
    pub url: String,
    /// Its DM channel (index into `Population::channels`).
    pub dm: Option<usize>,
    /// Its group channel.
    pub group: Option<usize>,
    /// The other member of its DM.
    pub dm_peer: Option<String>,
}

/// One channel and its members (indices into `Population::users`).
#[derive(Debug, Clone)]
pub struct BenchChannel {
    /// Server channel id.
    pub channel_id: String,
    /// Member users.
    pub members: Vec<usize>,
}

/// Everything a run drives.
#[derive(Debug, Clone, Default)]
pub struct Population {
    /// Users, index = user number.
    pub users: Vec<BenchUser>,
    /// Channels: DMs first, then groups.
    pub channels: Vec<BenchChannel>,
}

/// A user's `(dm, group)` channel indices.
type Membership = (Option<usize>, Option<usize>);

/// Channel membership of `shape`, as plain indices: `(dm, group)` per user and the members of
/// each channel. Pure, so both the node and the relay runs use the same layout.
fn layout(shape: Shape) -> (Vec<Membership>, Vec<Vec<usize>>) {
    let mut per_user = vec![(None, None); shape.users];
    let mut channels: Vec<Vec<usize>> = Vec::new();
    if shape.dm_pairs {
        for a in (0..shape.users.saturating_sub(1)).step_by(2) {
            per_user[a].0 = Some(channels.len());
            per_user[a + 1].0 = Some(channels.len());
            channels.push(vec![a, a + 1]);
        }
    }
    if shape.group_size > 1 {
        for start in (0..shape.users).step_by(shape.group_size) {
            let members: Vec<usize> = (start..(start + shape.group_size).min(shape.users)).collect();
            if members.len() < 2 {
                continue;
            }
            for &u in &members {
                per_user[u].1 = Some(channels.len());
            }
            channels.push(members);
        }
    }
    (per_user, channels)
}

/// The node (index into the URLs) of user `i` out of `nodes`: round-robin. DM pairs are users
/// `2k` and `2k + 1`, consecutive, so with two or more nodes every pair spans two nodes and
/// every DM is a cross-node one.
fn node_of(i: usize, nodes: usize) -> usize {
    i % nodes.max(1)
}

/// Made-up users and channels for the relay: no HTTP, ids are `u<i>` / `c<j>`, and the token
/// is `relay <user_id> <channel,channel…>`.
pub fn made_up(urls: &[String], shape: Shape) -> Population {
    let (per_user, members) = layout(shape);
    let channels: Vec<BenchChannel> = members
        .into_iter()
        .enumerate()
        .map(|(j, members)| BenchChannel {
            channel_id: format!("c{j}"),
            members,
        })
        .collect();
    let users = per_user
        .iter()
        .enumerate()
        .map(|(i, &(dm, group))| {
            let joined: Vec<&str> = [dm, group]
                .iter()
                .flatten()
                .map(|&c| channels[c].channel_id.as_str())
                .collect();
            BenchUser {
                user_id: format!("u{i}"),
                token: format!("relay u{i} {}", joined.join(",")),
                url: urls[node_of(i, urls.len())].clone(),
                dm,
                group,
                dm_peer: dm.map(|c| {
                    let peer = channels[c].members.iter().find(|&&m| m != i).copied().unwrap_or(i);
                    format!("u{peer}")
                }),
            }
        })
        .collect();
    Population { users, channels }
}

/// Signs up and logs in `shape.users` fresh users on the nodes (round-robin over `urls`), with
/// at most `concurrency` calls in flight, then opens the DMs and groups.
pub async fn create(
    urls: &[String],
    shape: Shape,
    concurrency: usize,
    deadline: Instant,
) -> anyhow::Result<Population> {
    // Unique per run so repeated runs against one data dir never collide.
    let run = format!(
        "{:x}",
        ((std::process::id() as u64) << 20) ^ (crate::stamp::now_ns() % (1 << 20))
    );
    let started = Instant::now();
    let logins = stream::iter(0..shape.users)
        .map(|i| {
            let url = urls[node_of(i, urls.len())].clone();
            let name = format!("lg{run}u{i}");
            async move {
                let http = HttpClient::new(&url);
                // `unavailable` (503) is retried, as a client should: it happens for a moment
                // around leader changes (e.g. right after a node joined). A retried sign-up
                // whose first try did commit answers `conflict`: that user is ours.
                let call = async {
                    let mut tries = 0;
                    loop {
                        tries += 1;
                        let attempt = async {
                            match http.signup(&name, PASSWORD).await {
                                Ok(_) => {}
                                Err(ClientError::Api { code, .. }) if code == "conflict" && tries > 1 => {}
                                Err(e) => return Err(e),
                            }
                            http.login(&name, PASSWORD, Some("loadgen"), None).await
                        };
                        match attempt.await {
                            Err(ClientError::Api { status: 503, .. }) if tries < 10 => {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                            }
                            other => break other,
                        }
                    }
                };
                let session = tokio::time::timeout(CALL_TIMEOUT, call)
                    .await
                    .with_context(|| format!("sign-up of {name} timed out"))?
                    .with_context(|| format!("sign-up of {name}"))?;
                anyhow::Ok((i, url, session))
            }
        })
        .buffer_unordered(concurrency.max(1));
    let mut sessions = vec![None; shape.users];
    let mut logins = std::pin::pin!(logins);
    let mut done = 0usize;
    while let Some(r) = logins.next().await {
        let (i, url, session) = r?;
        sessions[i] = Some((url, session));
        done += 1;
        if done.is_multiple_of(100) || done == shape.users {
            eprintln!(
                "setup: {done}/{} users logged in ({:.0?})",
                shape.users,
                started.elapsed()
            );
        }
        if Instant::now() > deadline {
            bail!("setup passed the run's time limit after {done} logins");
        }
    }
    let sessions: Vec<(String, ringchat_client::Session)> = sessions.into_iter().flatten().collect();
    let (per_user, members) = layout(shape);
    let user_ids: Vec<String> = sessions.iter().map(|(_, s)| s.user_id.clone()).collect();
    // (channel, creator's node, creator's token, the other members, is a DM): owned, so the
    // requests borrow nothing that is moved afterwards.
    let jobs: Vec<(usize, String, String, Vec<String>, bool)> = members
        .iter()
        .enumerate()
        .map(|(j, m)| {
            let (url, creator) = &sessions[m[0]];
            let others = m[1..].iter().map(|&o| user_ids[o].clone()).collect();
            (
                j,
                url.clone(),
                creator.token.clone(),
                others,
                per_user[m[0]].0 == Some(j),
            )
        })
        .collect();
    let opened = stream::iter(jobs)
        .map(|(j, url, token, others, is_dm)| async move {
            let http = HttpClient::new(&url).with_token(&token);
            let call = async {
                if is_dm {
                    http.open_dm(&others[0]).await
                } else {
                    http.create_group(&format!("lg group {j}"), &others).await
                }
            };
            let summary = tokio::time::timeout(CALL_TIMEOUT, call)
                .await
                .context("channel creation timed out")?
                .context("channel creation")?;
            anyhow::Ok((j, summary.channel_id))
        })
        .buffer_unordered(concurrency.max(1) * 4);
    let mut channel_ids = vec![String::new(); members.len()];
    let mut opened = std::pin::pin!(opened);
    while let Some(r) = opened.next().await {
        let (j, id) = r?;
        channel_ids[j] = id;
        if Instant::now() > deadline {
            bail!("setup passed the run's time limit while opening channels");
        }
    }
    let channels: Vec<BenchChannel> = members
        .into_iter()
        .zip(channel_ids)
        .map(|(members, channel_id)| BenchChannel { channel_id, members })
        .collect();
    let users = sessions
        .into_iter()
        .zip(per_user)
        .enumerate()
        .map(|(i, ((url, s), (dm, group)))| BenchUser {
            dm_peer: dm.and_then(|c| {
                channels[c]
                    .members
                    .iter()
                    .find(|&&m| m != i)
                    .map(|&m| user_ids[m].clone())
            }),
            user_id: s.user_id,
            token: s.token,
            url,
            dm,
            group,
        })
        .collect();
    Ok(Population { users, channels })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_pairs_and_groups_every_user() {
        let (per_user, channels) = layout(Shape {
            users: 250,
            dm_pairs: true,
            group_size: 100,
        });
        assert_eq!(channels.len(), 125 + 3);
        assert!(per_user.iter().all(|(dm, g)| dm.is_some() && g.is_some()));
        assert_eq!(channels[125].len(), 100);
        assert_eq!(channels[127].len(), 50);
    }

    #[test]
    fn with_several_nodes_every_dm_pair_spans_two_nodes() {
        for nodes in 2..=5 {
            let urls: Vec<String> = (0..nodes).map(|n| format!("http://127.0.0.1:{}", 7000 + n)).collect();
            let p = made_up(
                &urls,
                Shape {
                    users: 101,
                    dm_pairs: true,
                    group_size: 0,
                },
            );
            for c in &p.channels {
                let [a, b] = c.members[..] else {
                    panic!("a DM has two members")
                };
                assert_ne!(p.users[a].url, p.users[b].url, "{nodes} nodes: pair {a}-{b}");
            }
            // Users spread evenly: no node holds more than its share plus one.
            for u in &urls {
                let n = p.users.iter().filter(|x| &x.url == u).count();
                assert!(n <= 101 / nodes + 1, "{u}: {n}");
            }
        }
    }

    #[test]
    fn made_up_tokens_name_the_users_channels() {
        let p = made_up(
            &["http://127.0.0.1:1".into()],
            Shape {
                users: 4,
                dm_pairs: true,
                group_size: 0,
            },
        );
        assert_eq!(p.users[3].token, "relay u3 c1");
        assert_eq!(p.users[3].dm_peer.as_deref(), Some("u2"));
    }
}
