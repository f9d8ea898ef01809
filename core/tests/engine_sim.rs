//! The transfer machines against the simulated network (`btfs_core::engine::sim`): thousands
//! of seeded runs with dead, hung, slow, corrupt, full, busy, flapping and lying hosts. The
//! same tests run natively and in wasm32 (Node).
//!
//! A failing run panics with its seed; replay one with `BTFS_SIM_SEED=<seed> cargo test -p
//! btfs-core --test engine_sim`. `BTFS_SIM_RUNS=<n>` multiplies the number of seeds (long
//! campaigns outside CI).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use btfs_core::engine::download::{Download, DownloadConfig, DownloadError};
use btfs_core::engine::repair::{Repair, RepairConfig, RepairError};
use btfs_core::engine::sim::{Fault, Rng, SimNet};
use btfs_core::engine::upload::{Upload, UploadConfig, UploadError, UploadReport};
use btfs_core::engine::{HostId, Timing, MAX_OPS_PER_HOST};
use btfs_core::{Encoder, Layout, Link, Manifest, ObjectHeader, ObjectKey, Root, TOTAL_SHARDS};

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

fn runs(base: u64) -> std::ops::Range<u64> {
    if let Some(seed) = option_env_seed() {
        return seed..seed + 1;
    }
    let mult = std::env::var("BTFS_SIM_RUNS")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(1);
    0..base * mult
}

fn option_env_seed() -> Option<u64> {
    #[cfg(not(target_arch = "wasm32"))]
    {
        std::env::var("BTFS_SIM_SEED").ok()?.parse().ok()
    }
    #[cfg(target_arch = "wasm32")]
    {
        None
    }
}

/// Runs `f` for every seed; a failure names its seed.
fn for_seeds(test: &str, base: u64, f: impl Fn(u64) -> Result<(), String>) {
    for seed in runs(base) {
        if let Err(e) = f(seed) {
            panic!("{test}: seed {seed} failed (replay: BTFS_SIM_SEED={seed}): {e}");
        }
    }
}

fn plaintext(rng: &mut Rng, max: u64) -> Vec<u8> {
    let len = rng.below(max);
    (0..len).map(|_| rng.next_u64() as u8).collect()
}

fn shard_size(rng: &mut Rng) -> u32 {
    [1024, 2048, 4096][rng.below(3) as usize]
}

/// Uploads `plain` through the machine; the encoder feeds it slab by slab as the machine
/// accepts them (checking the backpressure on the way).
fn upload(
    net: &mut SimNet,
    plain: &[u8],
    shard: u32,
    candidates: Vec<HostId>,
    seed: u64,
) -> Result<(Result<UploadReport, UploadError>, Upload), String> {
    upload_with(net, plain, shard, candidates, seed, UploadConfig::default())
}

fn upload_with(
    net: &mut SimNet,
    plain: &[u8],
    shard: u32,
    candidates: Vec<HostId>,
    seed: u64,
    cfg: UploadConfig,
) -> Result<(Result<UploadReport, UploadError>, Upload), String> {
    let layout = Layout::new(plain.len() as u64, shard).map_err(|e| e.to_string())?;
    let key = ObjectKey::from_bytes([seed as u8; 32]);
    let header = ObjectHeader {
        name: format!("object-{seed}"),
        mime: "application/octet-stream".into(),
    };
    let m = Upload::new(layout, key.clone(), header, candidates, cfg, net.now);
    let (r, m, _) = drive_upload(net, m, plain, &key, layout, cfg, |_| false)?;
    Ok((r.ok_or("the upload stopped")?, m))
}

/// Feeds `plain` into `m` until it finishes, or until `stop` (as a killed process stops: its
/// result is then `None`). Also returns every slab `m` offered to its journal.
#[allow(clippy::type_complexity)]
fn drive_upload(
    net: &mut SimNet,
    mut m: Upload,
    plain: &[u8],
    key: &ObjectKey,
    layout: Layout,
    cfg: UploadConfig,
    mut stop: impl FnMut(&Upload) -> bool,
) -> Result<
    (
        Option<Result<UploadReport, UploadError>>,
        Upload,
        Vec<(u64, Vec<(Root, HostId)>)>,
    ),
    String,
> {
    let mut journaled = Vec::new();
    let mut enc = Some(Encoder::new(key, layout));
    let mut fed = 0usize;
    let mut pending = None;
    let mut refused_ok = true;
    // Per-slab progress never goes back.
    let mut slab_shown = vec![0usize; layout.slab_count() as usize];
    let mut slab_regressed = false;
    let result = net.run_until(
        &mut m,
        |m, _| {
            while let Some(p) = m.poll_placed() {
                journaled.push(p);
            }
            for (s, shown) in slab_shown.iter_mut().enumerate() {
                let now = m.placed_shards(s as u64);
                slab_regressed |= now < *shown;
                *shown = now;
            }
            let Some(e) = enc.as_mut() else { return false };
            if pending.is_none() {
                loop {
                    match e.next_slab() {
                        Ok(Some(s)) => {
                            pending = Some(s);
                            break;
                        }
                        Ok(None) if fed < plain.len() => {
                            let n = e.feed(&plain[fed..]).unwrap_or(0);
                            fed += n;
                        }
                        Ok(None) => break,
                        Err(_) => break,
                    }
                }
            }
            match pending.take() {
                Some(s) => {
                    let wanted = m.wants_slab();
                    match m.push_slab(s) {
                        Ok(()) => {
                            refused_ok &= wanted;
                            true
                        }
                        Err(s) => {
                            refused_ok &= !wanted;
                            pending = Some(*s);
                            false
                        }
                    }
                }
                None => {
                    if let Some(e) = enc.take() {
                        if e.finish().is_err() {
                            m.abort();
                        } else {
                            m.finish_input();
                        }
                        return true;
                    }
                    false
                }
            }
        },
        |m| stop(m),
    );
    let stopped = result.map_err(|e| format!("upload run: {e:?}"))?;
    while let Some(p) = m.poll_placed() {
        journaled.push(p);
    }
    if stopped {
        return Ok((None, m, journaled));
    }
    if !refused_ok {
        return Err("push_slab accepted a slab it did not want, or refused one it wanted".into());
    }
    let r = m.take_result().ok_or("upload finished without a result")?;
    // (A failed upload drops what it placed: its counts fall back to 0.)
    if slab_regressed && r.is_ok() {
        return Err("a slab's placed shard count went down".into());
    }
    let all = (0..layout.slab_count()).all(|s| m.placed_shards(s) == TOTAL_SHARDS);
    if r.is_ok() && !all {
        return Err("the upload succeeded with a slab short of 30 placed shards".into());
    }
    if net.stats.max_in_flight > cfg.max_in_flight() {
        return Err(format!(
            "upload had {} ops in flight, bound {}",
            net.stats.max_in_flight,
            cfg.max_in_flight()
        ));
    }
    check_per_host(net, "upload")?;
    Ok((Some(r), m, journaled))
}

fn download(
    net: &mut SimNet,
    link: &Link,
    candidates: Vec<HostId>,
) -> Result<Result<Vec<u8>, DownloadError>, String> {
    download_with(net, link, candidates, DownloadConfig::default())
}

fn download_with(
    net: &mut SimNet,
    link: &Link,
    candidates: Vec<HostId>,
    cfg: DownloadConfig,
) -> Result<Result<Vec<u8>, DownloadError>, String> {
    let mut m = Download::new(link.clone(), candidates, cfg, net.now);
    let mut out = Vec::new();
    net.run(&mut m, |m, _| match m.poll_output() {
        Some(p) => {
            out.extend_from_slice(&p);
            true
        }
        None => false,
    })
    .map_err(|e| format!("download run: {e:?}"))?;
    while let Some(p) = m.poll_output() {
        out.extend_from_slice(&p);
    }
    if net.stats.max_in_flight > m.max_in_flight() {
        return Err(format!(
            "download had {} ops in flight, bound {}",
            net.stats.max_in_flight,
            m.max_in_flight()
        ));
    }
    check_per_host(net, "download")?;
    match m
        .take_result()
        .ok_or("download finished without a result")?
    {
        Ok(report) => {
            if report.bytes != out.len() as u64 {
                return Err(format!(
                    "report says {} bytes, got {}",
                    report.bytes,
                    out.len()
                ));
            }
            Ok(Ok(out))
        }
        Err(e) => Ok(Err(e)),
    }
}

/// With every host honest again, `link` downloads as `plain`.
fn reads_back_with_all_honest(
    net: &mut SimNet,
    link: &Link,
    ids: Vec<HostId>,
    plain: &[u8],
) -> Result<(), String> {
    for h in net.hosts.iter_mut() {
        h.fault = Fault::Honest;
    }
    fresh_stats(net);
    match download(net, link, ids)? {
        Ok(b) if b == plain => Ok(()),
        Ok(_) => Err("read back different bytes".into()),
        Err(e) => Err(format!("read back failed: {e}")),
    }
}

fn fresh_stats(net: &mut SimNet) {
    net.stats = Default::default();
    #[cfg(not(target_arch = "wasm32"))]
    {
        net.trace = std::env::var_os("BTFS_SIM_TRACE").is_some();
    }
}

/// No machine had more than [`MAX_OPS_PER_HOST`] ops on one host at once.
fn check_per_host(net: &SimNet, what: &str) -> Result<(), String> {
    if net.stats.max_per_host > MAX_OPS_PER_HOST {
        return Err(format!(
            "{what} had {} ops in flight on one host, bound {MAX_OPS_PER_HOST}",
            net.stats.max_per_host
        ));
    }
    Ok(())
}

fn check_hedges(net: &SimNet) -> Result<(), String> {
    check_per_host(net, "a machine")?;
    if net.stats.early_hedges > 0 {
        return Err(format!(
            "{} hedges started before any op reached the hedge deadline",
            net.stats.early_hedges
        ));
    }
    Ok(())
}

fn honest_upload(
    seed: u64,
    hosts: usize,
    max_len: u64,
) -> Result<(SimNet, Vec<u8>, UploadReport), String> {
    let mut rng = Rng::new(seed);
    let mut net = SimNet::new(seed, &vec![Fault::Honest; hosts]);
    let plain = plaintext(&mut rng, max_len);
    let shard = shard_size(&mut rng);
    let ids = net.ids();
    let (r, _) = upload(&mut net, &plain, shard, ids, seed)?;
    let report = r.map_err(|e| format!("honest upload failed: {e}"))?;
    Ok((net, plain, report))
}

fn manifest_of(net: &SimNet, report: &UploadReport) -> Result<Manifest, String> {
    let id = report.link.manifest_id;
    let host = report.manifest_hosts.first().ok_or("no manifest host")?;
    let bytes = net
        .host(*host)
        .and_then(|h| h.blobs.get(&id))
        .ok_or("manifest not stored")?;
    Manifest::decode(bytes).map_err(|e| e.to_string())
}

const DOWNLOAD_FAULTS: [Fault; 8] = [
    Fault::Dead,
    Fault::Hung,
    Fault::DiesAt(Duration::from_millis(30)),
    Fault::Slow(20),
    Fault::Corrupt,
    Fault::Busy(50),
    Fault::Flapping(Duration::from_millis(40)),
    Fault::Honest,
];

/// Whenever ≥ 10 honest shards per slab (and one manifest copy) stay reachable, the bytes come
/// back identical; otherwise the error names a slab that really had fewer than 10, or the
/// manifest. A corrupt shard never reaches the decoder (no decode error, ever).
#[test]
fn downloads_survive_any_faults_that_leave_ten_honest_shards() {
    for_seeds("download", 800, |seed| {
        let mut rng = Rng::new(seed ^ 0xD0);
        let hosts = 30 + rng.below(16) as usize;
        let (mut net, plain, report) = honest_upload(seed, hosts, 60_000)?;
        // Faults after the upload.
        let faulty = rng.below(hosts as u64 + 1) as usize;
        let ids = net.ids();
        let mut faults = BTreeMap::new();
        for &id in ids.iter().take(faulty) {
            let f = DOWNLOAD_FAULTS[rng.below(DOWNLOAD_FAULTS.len() as u64) as usize];
            faults.insert(id, f);
        }
        let good = |h: &HostId| {
            matches!(
                faults.get(h).copied().unwrap_or(Fault::Honest),
                Fault::Honest | Fault::Slow(_)
            )
        };
        for (&id, &f) in &faults {
            net.host_mut(id).ok_or("host")?.fault = f;
        }
        let good_shards: Vec<usize> = report
            .placement
            .iter()
            .map(|s| s.iter().filter(|h| good(h)).count())
            .collect();
        let manifest_ok = report.manifest_hosts.iter().any(good);
        fresh_stats(&mut net);
        let mut candidates = ids.clone();
        // Tenants know the hosts in some order of their own.
        for i in (1..candidates.len()).rev() {
            candidates.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let got = download(&mut net, &report.link, candidates)?;
        check_hedges(&net)?;
        let guaranteed = manifest_ok && good_shards.iter().all(|&g| g >= 10);
        match got {
            Ok(bytes) if bytes == plain => Ok(()),
            Ok(_) => Err("download returned different bytes".into()),
            Err(DownloadError::SlabLost {
                slab,
                have,
                failures,
            }) => {
                if guaranteed {
                    return Err(format!("slab {slab} lost with {have} verified ({failures}) although every slab had ≥10 honest shards: {good_shards:?}"));
                }
                if have >= 10 || failures.total() == 0 {
                    return Err(format!(
                        "slab {slab} lost with inconsistent counts: {have} verified, {failures}"
                    ));
                }
                Ok(())
            }
            Err(DownloadError::ManifestLost { failures, .. }) if !manifest_ok || !guaranteed => {
                if failures.total() == 0 {
                    return Err("manifest lost without a failure".into());
                }
                Ok(())
            }
            Err(DownloadError::Unreachable { .. }) if !manifest_ok => Ok(()),
            Err(e) => Err(format!("unexpected error (guaranteed {guaranteed}): {e}")),
        }
    });
}

/// A third of the hosts hung (connection open, nothing answered): the download costs about one
/// hedge deadline, not a timeout per slab.
#[test]
fn a_third_of_hosts_hung_costs_one_hedge_deadline() {
    for_seeds("hung", 60, |seed| {
        let mut rng = Rng::new(seed ^ 0x40);
        let (mut net, plain, report) = honest_upload(seed, 30, 200_000)?;
        let ids = net.ids();
        let hung: BTreeSet<usize> = (0..10)
            .map(|i| (i * 3 + rng.below(3) as usize) % 30)
            .collect();
        for &i in &hung {
            net.host_mut(ids[i]).ok_or("host")?.fault = Fault::Hung;
        }
        fresh_stats(&mut net);
        let got = download(&mut net, &report.link, ids)?;
        if got.map_err(|e| e.to_string())? != plain {
            return Err("different bytes".into());
        }
        check_hedges(&net)?;
        let bound = Timing::default().hedge_min * 2 + Duration::from_millis(500);
        if net.stats.elapsed > bound {
            return Err(format!(
                "took {:?} of virtual time with {} hung hosts over {} slabs (bound {bound:?})",
                net.stats.elapsed,
                hung.len(),
                report.slabs
            ));
        }
        Ok(())
    });
}

const UPLOAD_FAULTS: [Fault; 8] = [
    Fault::Dead,
    Fault::Hung,
    Fault::Full,
    Fault::Busy(60),
    Fault::Slow(30),
    Fault::Corrupt,
    Fault::DiesAt(Duration::from_millis(25)),
    Fault::Flapping(Duration::from_millis(30)),
];

/// Uploads place 30 distinct hosts per slab and keep exactly what they claim; they succeed
/// whenever ≥ 30 hosts take puts faithfully, and a failed upload leaves nothing on any host
/// that could be asked to release.
#[test]
fn uploads_place_distinct_hosts_and_leave_nothing_behind() {
    for_seeds("upload", 700, |seed| {
        let mut rng = Rng::new(seed ^ 0x0F);
        let hosts = 30 + rng.below(20) as usize;
        let mut faults = vec![Fault::Honest; hosts];
        let faulty = rng.below(hosts as u64 / 2 + 2) as usize;
        for f in faults.iter_mut().take(faulty) {
            *f = UPLOAD_FAULTS[rng.below(UPLOAD_FAULTS.len() as u64) as usize];
        }
        for i in (1..faults.len()).rev() {
            faults.swap(i, rng.below(i as u64 + 1) as usize);
        }
        let mut net = SimNet::new(seed, &faults);
        let plain = plaintext(&mut rng, 60_000);
        let shard = shard_size(&mut rng);
        let ids = net.ids();
        let faithful = |f: Fault| matches!(f, Fault::Honest | Fault::Slow(_) | Fault::Corrupt);
        let willing = faults.iter().filter(|&&f| faithful(f)).count();
        let (result, _) = upload(&mut net, &plain, shard, ids.clone(), seed)?;
        check_hedges(&net)?;
        // What every host holds now.
        let held: BTreeSet<(Root, HostId)> = net
            .hosts
            .iter()
            .flat_map(|h| h.blobs.keys().map(move |&r| (r, h.id)))
            .collect();
        let may_leak = |h: &HostId| {
            let f = net.host(*h).map(|h| h.fault);
            matches!(
                f,
                Some(Fault::DiesAt(_) | Fault::Flapping(_) | Fault::Busy(_))
            )
        };
        match result {
            Ok(report) => {
                let mut kept = BTreeSet::new();
                for (s, hosts) in report.placement.iter().enumerate() {
                    let distinct: BTreeSet<_> = hosts.iter().collect();
                    if hosts.len() != TOTAL_SHARDS || distinct.len() != TOTAL_SHARDS {
                        return Err(format!("slab {s} is on {} distinct hosts", distinct.len()));
                    }
                    for &h in hosts {
                        if !faithful(net.host(h).ok_or("host")?.fault) && !may_leak(&h) {
                            return Err(format!(
                                "slab {s} placed on a {:?} host",
                                net.host(h).map(|h| h.fault)
                            ));
                        }
                    }
                }
                let manifest = manifest_of(&net, &report)?;
                for (s, rec) in manifest.slabs().iter().enumerate() {
                    for (k, shard) in rec.iter().enumerate() {
                        let h = report.placement[s][k];
                        let host = net.host(h).ok_or("host")?;
                        if !host.claimed.contains(&shard.root) {
                            return Err(format!("slab {s} shard {k} not claimed on its host"));
                        }
                        kept.insert((shard.root, h));
                    }
                }
                for &h in &report.manifest_hosts {
                    kept.insert((report.link.manifest_id, h));
                }
                for &(r, h) in held.difference(&kept) {
                    if !may_leak(&h) {
                        return Err(format!(
                            "{} left on {h} ({:?}) although not part of the object",
                            r.to_hex(),
                            net.host(h).map(|x| x.fault)
                        ));
                    }
                }
                // And the object reads back, with every host honest again.
                reads_back_with_all_honest(&mut net, &report.link, ids, &plain)
            }
            Err(UploadError::TooFewHosts { .. } | UploadError::Unreachable { .. })
                if willing < 30 + 4 =>
            {
                for &(r, h) in &held {
                    if !may_leak(&h) {
                        return Err(format!("failed upload left {} on {h}", r.to_hex()));
                    }
                }
                Ok(())
            }
            Err(UploadError::Claim { .. }) if faults.iter().any(|f| !faithful(*f)) => Ok(()),
            Err(e) => Err(format!(
                "upload failed with {willing} faithful hosts of {hosts}: {e}"
            )),
        }
    });
}

/// A host that answers puts OK but stores nothing is caught by the claim: the upload fails,
/// says which host, and releases what it placed.
#[test]
fn a_lying_host_is_caught_by_the_claim() {
    for_seeds("lying", 100, |seed| {
        let mut faults = vec![Fault::Honest; 32];
        faults[(seed % 32) as usize] = Fault::Lying;
        let mut net = SimNet::new(seed, &faults);
        let mut rng = Rng::new(seed);
        let plain = plaintext(&mut rng, 30_000);
        let ids = net.ids();
        let liar = ids[(seed % 32) as usize];
        let (r, _) = upload(&mut net, &plain, 1024, ids, seed)?;
        match r {
            Err(UploadError::Claim { host, .. }) if host == liar => {}
            Ok(report)
                if report.placement.iter().all(|s| !s.contains(&liar))
                    && !report.manifest_hosts.contains(&liar) => {}
            other => {
                return Err(format!(
                    "expected a claim failure naming the liar, got {other:?}"
                ))
            }
        }
        Ok(())
    });
}

/// Repair rebuilds exactly the lost shards, byte-identical (same roots), on hosts that hold
/// nothing of that slab, whenever 10 honest shards per slab remain.
#[test]
fn repair_restores_exactly_the_lost_shards() {
    for_seeds("repair", 600, |seed| {
        let mut rng = Rng::new(seed ^ 0x4E);
        let hosts = 40 + rng.below(30) as usize;
        let (mut net, _, report) = honest_upload(seed, hosts, 50_000)?;
        let manifest = manifest_of(&net, &report)?;
        // Lose some shards: delete them from their hosts.
        let mut lost: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
        for (s, rec) in manifest.slabs().iter().enumerate() {
            let n = rng.below(21);
            for _ in 0..n {
                let k = rng.below(30) as usize;
                let h = report.placement[s][k];
                net.host_mut(h).ok_or("host")?.blobs.remove(&rec[k].root);
                lost.entry(s as u64).or_default().insert(k);
            }
        }
        // Some other hosts misbehave too.
        let ids = net.ids();
        let mut bad = BTreeSet::new();
        for _ in 0..rng.below(6) {
            let i = rng.below(hosts as u64) as usize;
            let f =
                [Fault::Hung, Fault::Corrupt, Fault::Slow(10), Fault::Dead][rng.below(4) as usize];
            net.host_mut(ids[i]).ok_or("host")?.fault = f;
            if f != Fault::Slow(10) {
                bad.insert(ids[i]);
            }
        }
        let enough = manifest.slabs().iter().enumerate().all(|(s, rec)| {
            (0..30)
                .filter(|k| !lost.get(&(s as u64)).is_some_and(|l| l.contains(k)))
                .filter(|&k| !bad.contains(&report.placement[s][k]))
                .count()
                >= 10
                && rec.len() == 30
        });
        fresh_stats(&mut net);
        let mut m = Repair::new(
            manifest.clone(),
            lost.clone(),
            ids,
            RepairConfig::default(),
            net.now,
        )
        .map_err(|e| e.to_string())?;
        net.run(&mut m, |_, _| false)
            .map_err(|e| format!("{e:?}"))?;
        check_hedges(&net)?;
        match m.take_result().ok_or("no result")? {
            Ok(r) => {
                let got: BTreeSet<(u64, usize)> =
                    r.repaired.iter().map(|x| (x.slab, x.shard)).collect();
                let want: BTreeSet<(u64, usize)> = lost
                    .iter()
                    .flat_map(|(&s, ks)| ks.iter().map(move |&k| (s, k)))
                    .collect();
                if got != want {
                    return Err(format!("repaired {got:?}, lost {want:?}"));
                }
                for x in &r.repaired {
                    let rec = &manifest.slabs()[x.slab as usize];
                    if x.root != rec[x.shard].root {
                        return Err("repaired shard has another root".into());
                    }
                    if report.placement[x.slab as usize].contains(&x.host) {
                        return Err(format!(
                            "slab {} shard {} placed on a host of the slab",
                            x.slab, x.shard
                        ));
                    }
                    let host = net.host(x.host).ok_or("host")?;
                    let bytes = host.blobs.get(&x.root).ok_or("repaired shard not stored")?;
                    if Root::of(bytes) != x.root || !host.claimed.contains(&x.root) {
                        return Err("repaired shard stored wrong or unclaimed".into());
                    }
                }
                let per_slab: BTreeMap<u64, BTreeSet<HostId>> =
                    r.repaired.iter().fold(BTreeMap::new(), |mut m, x| {
                        m.entry(x.slab).or_default().insert(x.host);
                        m
                    });
                for (s, hs) in per_slab {
                    if hs.len() != lost[&s].len() {
                        return Err(format!("slab {s}: repaired shards share hosts"));
                    }
                }
                Ok(())
            }
            Err(RepairError::SlabLost { .. }) if !enough => Ok(()),
            Err(RepairError::TooFewHosts { .. }) if hosts - 30 < 20 || !bad.is_empty() => Ok(()),
            Err(e) => Err(format!("repair failed (enough shards: {enough}): {e}")),
        }
    });
}

/// With many slabs in flight on a small network every host would get one op per slab: the
/// per-host bound binds (reached, never passed) and transfers still complete, byte-identical,
/// also with slow and busy hosts among them.
#[test]
fn the_per_host_bound_binds_and_transfers_still_finish() {
    for_seeds("per-host bound", 40, |seed| {
        let mut rng = Rng::new(seed ^ 0xB0);
        let hosts = 31 + rng.below(4) as usize;
        let mut faults = vec![Fault::Honest; hosts];
        for _ in 0..rng.below(3) {
            faults[rng.below(hosts as u64) as usize] =
                [Fault::Slow(8), Fault::Busy(30)][rng.below(2) as usize];
        }
        let mut net = SimNet::new(seed, &faults);
        // 12 slabs in flight, 1 KiB shards: 25-30 slabs of 10 KiB.
        let plain: Vec<u8> = (0..250_000 + rng.below(50_000))
            .map(|_| rng.next_u64() as u8)
            .collect();
        let cfg = UploadConfig {
            slabs_in_flight: 12,
            ..UploadConfig::default()
        };
        fresh_stats(&mut net);
        let ids = net.ids();
        let (r, _) = upload_with(&mut net, &plain, 1024, ids.clone(), seed, cfg)?;
        let report = r.map_err(|e| format!("upload failed: {e}"))?;
        if net.stats.max_per_host != MAX_OPS_PER_HOST {
            return Err(format!(
                "upload: the bound never bound: at most {} ops on one host",
                net.stats.max_per_host
            ));
        }
        fresh_stats(&mut net);
        let cfg = DownloadConfig {
            slabs_ahead: 12,
            max_in_flight: 400,
            ..DownloadConfig::default()
        };
        let got = download_with(&mut net, &report.link, ids, cfg)?
            .map_err(|e| format!("download failed: {e}"))?;
        if got != plain {
            return Err("downloaded bytes differ".into());
        }
        if net.stats.max_per_host != MAX_OPS_PER_HOST {
            return Err(format!(
                "download: the bound never bound: at most {} ops on one host",
                net.stats.max_per_host
            ));
        }
        Ok(())
    });
}

/// On an honest network of ≥ 20 hosts, consecutive slabs keep their data shards (what a
/// download fetches first) on disjoint hosts, so a download with two slabs in flight reads
/// from 20 hosts, not the same 10.
#[test]
fn consecutive_slabs_keep_their_data_shards_on_different_hosts() {
    for_seeds("data shard spread", 30, |seed| {
        let mut rng = Rng::new(seed ^ 0xDA);
        let hosts = 30 + rng.below(15) as usize;
        let mut net = SimNet::new(seed, &vec![Fault::Honest; hosts]);
        let plain: Vec<u8> = (0..40_000 + rng.below(40_000))
            .map(|_| rng.next_u64() as u8)
            .collect();
        let ids = net.ids();
        let (r, _) = upload(&mut net, &plain, 1024, ids, seed)?;
        let report = r.map_err(|e| format!("upload failed: {e}"))?;
        for (s, pair) in report.placement.windows(2).enumerate() {
            let a: BTreeSet<HostId> = pair[0][..10].iter().copied().collect();
            if let Some(h) = pair[1][..10].iter().find(|h| a.contains(h)) {
                return Err(format!(
                    "slabs {s} and {} both keep a data shard on {h}",
                    s + 1
                ));
            }
        }
        if report.placement.len() < 2 {
            return Err("the object has fewer than 2 slabs".into());
        }
        Ok(())
    });
}

/// The same seed gives the same run: failures replay exactly.
#[test]
fn runs_are_deterministic() {
    let run = |seed| {
        let (net, _, report) = honest_upload(seed, 35, 40_000).unwrap();
        (net.stats.started, net.now, report.placement)
    };
    assert_eq!(run(7), run(7));
}

/// After a repair the link does not change: a download told the moves (a Guard's placement
/// updates) finds the new holders even when too few original holders are left to decode
/// without them, and a second repair fetches from the moved shards and places away from every
/// host that holds or held a shard of the slab.
#[test]
fn moved_shards_are_found_by_downloads_and_later_repairs() {
    use btfs_core::engine::Moves;
    for_seeds("moves", 100, |seed| {
        let mut rng = Rng::new(seed ^ 0x77);
        let (mut net, plain, report) = honest_upload(seed, 75, 60_000)?;
        let manifest = manifest_of(&net, &report)?;
        let link = report.link.clone();
        let slabs = manifest.slabs().len();
        let mut lost: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
        for s in 0..slabs {
            let ks = lost.entry(s as u64).or_default();
            while ks.len() < 12 {
                ks.insert(rng.below(30) as usize);
            }
        }
        // The first 12 of each slab are lost from their hosts' disks.
        for (&s, ks) in &lost {
            for &k in ks {
                let root = manifest.slabs()[s as usize][k].root;
                let h = report.placement[s as usize][k];
                net.host_mut(h).ok_or("host")?.blobs.remove(&root);
            }
        }
        let mut m = Repair::new(
            manifest.clone(),
            lost.clone(),
            net.ids(),
            RepairConfig::default(),
            net.now,
        )
        .map_err(|e| e.to_string())?;
        net.run(&mut m, |_, _| false)
            .map_err(|e| format!("{e:?}"))?;
        let first = m
            .take_result()
            .ok_or("no result")?
            .map_err(|e| e.to_string())?;
        let mut moves: Moves = first
            .repaired
            .iter()
            .map(|x| ((x.slab, x.shard), (x.root, x.host)))
            .collect();
        // Now 9 more original shards per slab are lost: 9 originals + 12 moved remain.
        let mut second: BTreeMap<u64, BTreeSet<usize>> = BTreeMap::new();
        for s in 0..slabs {
            let gone: Vec<usize> = (0..30)
                .filter(|k| !lost[&(s as u64)].contains(k))
                .take(9)
                .collect();
            for &k in &gone {
                let root = manifest.slabs()[s][k].root;
                net.host_mut(report.placement[s][k])
                    .ok_or("host")?
                    .blobs
                    .remove(&root);
            }
            second.insert(s as u64, gone.into_iter().collect());
        }
        fresh_stats(&mut net);
        // Without the moves 9 shards per slab are reachable: the download must fail.
        let ids = net.ids();
        match download(&mut net, &link, ids)? {
            Err(DownloadError::SlabLost { .. }) => {}
            other => {
                return Err(format!(
                    "download without moves: {:?}",
                    other.map(|b| b.len())
                ))
            }
        }
        fresh_stats(&mut net);
        let mut d = Download::with_moves(
            link.clone(),
            net.ids(),
            moves.clone(),
            DownloadConfig::default(),
            net.now,
        );
        let mut out = Vec::new();
        net.run(&mut d, |d, _| match d.poll_output() {
            Some(p) => {
                out.extend_from_slice(&p);
                true
            }
            None => false,
        })
        .map_err(|e| format!("{e:?}"))?;
        while let Some(p) = d.poll_output() {
            out.extend_from_slice(&p);
        }
        d.take_result()
            .ok_or("no result")?
            .map_err(|e| e.to_string())?;
        if out != plain {
            return Err("download with moves returned other bytes".into());
        }
        // A second repair of the 9 needs the moved shards (only 9 originals are left).
        let mut m = Repair::with_moves(
            manifest.clone(),
            moves.clone(),
            second.clone(),
            net.ids(),
            RepairConfig::default(),
            net.now,
        )
        .map_err(|e| e.to_string())?;
        net.run(&mut m, |_, _| false)
            .map_err(|e| format!("{e:?}"))?;
        let again = m
            .take_result()
            .ok_or("no result")?
            .map_err(|e| e.to_string())?;
        if again.repaired.len() != 9 * slabs {
            return Err(format!("second repair rebuilt {}", again.repaired.len()));
        }
        for x in &again.repaired {
            let originals = &report.placement[x.slab as usize];
            let moved = moves
                .iter()
                .any(|(&(slab, _), &(_, h))| slab == x.slab && h == x.host);
            if originals.contains(&x.host) || moved {
                return Err(format!(
                    "slab {} shard {} placed on a holder",
                    x.slab, x.shard
                ));
            }
        }
        moves.extend(
            again
                .repaired
                .iter()
                .map(|x| ((x.slab, x.shard), (x.root, x.host))),
        );
        Ok(())
    });
}

/// The roots of every slab of `plain` under `key` (encoding is deterministic).
fn slab_roots(plain: &[u8], key: &ObjectKey, layout: Layout) -> Result<Vec<Vec<Root>>, String> {
    let mut enc = Encoder::new(key, layout);
    let mut out = Vec::new();
    let mut fed = 0;
    loop {
        match enc.next_slab().map_err(|e| e.to_string())? {
            Some(s) => out.push(s.roots.to_vec()),
            None if fed < plain.len() => {
                fed += enc.feed(&plain[fed..]).map_err(|e| e.to_string())?
            }
            None => break,
        }
    }
    enc.finish().map_err(|e| e.to_string())?;
    Ok(out)
}

/// An upload stopped midway (a killed CLI, a reloaded page) resumes from its journal: shards
/// its hosts still have are checked, not sent again; shards a host lost (swept, or on a host
/// that is now dead or hung) are placed anew; the object reads back identical. On odd seeds the
/// resumed file has one byte changed: if that byte is in a journaled slab the upload fails
/// naming that slab, otherwise the result is the changed file.
#[test]
fn a_stopped_upload_resumes_without_sending_placed_slabs_again() {
    use btfs_core::engine::journal::Journal;
    for_seeds("resume", 200, |seed| {
        let mut rng = Rng::new(seed ^ 0x5E5E);
        let hosts = 30 + rng.below(8) as usize;
        let mut net = SimNet::new(seed, &vec![Fault::Honest; hosts]);
        let shard = shard_size(&mut rng);
        let slab_plain = u64::from(shard) * 9;
        let len = slab_plain * (2 + rng.below(5)) + rng.below(slab_plain);
        let mut plain: Vec<u8> = (0..len).map(|_| rng.next_u64() as u8).collect();
        let layout = Layout::new(len, shard).map_err(|e| e.to_string())?;
        let key = ObjectKey::from_bytes([(seed as u8) ^ 0xA5; 32]);
        let header = ObjectHeader {
            name: format!("resume-{seed}"),
            mime: String::new(),
        };
        let cfg = UploadConfig::default();
        let ids = net.ids();
        let slabs = layout.slab_count();
        let stop_after = 1 + rng.below(slabs - 1) as usize;
        let m = Upload::new(
            layout,
            key.clone(),
            header.clone(),
            ids.clone(),
            cfg,
            net.now,
        );
        let full = |m: &Upload| {
            (0..slabs)
                .filter(|&s| m.placed_shards(s) == TOTAL_SHARDS)
                .count()
        };
        let (r, _, journaled) = drive_upload(&mut net, m, &plain, &key, layout, cfg, |m| {
            full(m) >= stop_after
        })?;
        if r.is_some() {
            return Err("the upload finished before it was stopped".into());
        }
        if journaled.len() < stop_after {
            return Err(format!(
                "{} slabs journaled, {stop_after} placed",
                journaled.len()
            ));
        }
        // The journal, through its text form.
        let mut j = Journal::new(
            format!("{seed:016x}"),
            btfs_core::engine::sim::host_ids(TOTAL_SHARDS + 1)[TOTAL_SHARDS].peer(),
            layout,
            key.clone(),
            header,
            0,
            "sim".into(),
        );
        let mut text = format!("{}\n", j.header_line());
        for (i, p) in &journaled {
            text += &format!("{}\n", Journal::slab_line(*i, p));
        }
        j = Journal::parse(&text).map_err(|e| e.to_string())?;
        // Meanwhile: hosts swept some shards, one host died, one hung.
        for (_, placed) in &journaled {
            for &(root, host) in placed {
                if rng.chance(10) {
                    if let Some(h) = net.host_mut(host) {
                        h.blobs.remove(&root);
                    }
                }
            }
        }
        if hosts >= 31 && rng.chance(50) {
            net.hosts[rng.below(hosts as u64) as usize].fault = Fault::Dead;
        }
        if hosts >= 32 && rng.chance(50) {
            net.hosts[rng.below(hosts as u64) as usize].fault = Fault::Hung;
        }
        let expected: usize = journaled
            .iter()
            .flat_map(|(_, p)| p)
            .filter(|(root, host)| {
                net.host(*host)
                    .is_some_and(|h| h.fault == Fault::Honest && h.blobs.contains_key(root))
            })
            .count();
        let changed_in = if seed % 2 == 1 {
            let at = rng.below(len) as usize;
            plain[at] ^= 0x40;
            let roots = slab_roots(&plain, &key, layout)?;
            j.slabs
                .iter()
                .find(|(&i, p)| {
                    p.iter()
                        .map(|(r, _)| *r)
                        .ne(roots[i as usize].iter().copied())
                })
                .map(|(&i, _)| i)
        } else {
            None
        };
        fresh_stats(&mut net);
        let m = Upload::resume(&j, ids.clone(), cfg, net.now);
        let (r, _, _) = drive_upload(&mut net, m, &plain, &key, layout, cfg, |_| false)?;
        let r = r.ok_or("the resumed upload stopped")?;
        check_hedges(&net)?;
        let report = match (r, changed_in) {
            (Err(UploadError::Changed { slab }), Some(s)) if slab == s => return Ok(()),
            (Err(e), _) => return Err(format!("resume failed (changed slab {changed_in:?}): {e}")),
            (Ok(_), Some(s)) => return Err(format!("slab {s} changed, but the resume succeeded")),
            (Ok(report), None) => report,
        };
        if report.resumed_shards != expected {
            return Err(format!(
                "{} shards resumed, {expected} were still on live hosts",
                report.resumed_shards
            ));
        }
        let needed = slabs as usize * TOTAL_SHARDS - expected + TOTAL_SHARDS;
        let puts = net.stats.puts;
        if puts < needed || puts > needed + report.failed_puts + report.hedged_puts {
            return Err(format!(
                "{puts} puts for {needed} blobs to place ({} failed, {} hedged)",
                report.failed_puts, report.hedged_puts
            ));
        }
        reads_back_with_all_honest(&mut net, &report.link, ids, &plain)
    });
}
