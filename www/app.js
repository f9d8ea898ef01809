// The dApp page: BtfsClient from the btfs-client npm package (served at ./pkg/), the network
// description from ./network.json (both served by `cargo xtask demo`).
import init, { BtfsClient, isValidLink } from './pkg/btfs_client.js';

const $ = (id) => document.getElementById(id);
let client = null;
let hasEscrow = false;

function explain(err) {
  let text = err && err.message ? err.message : String(err);
  for (let c = err && err.cause; c; c = c.cause) text += `\ncaused by: ${c.message || c}`;
  return text;
}

function show(el, text, cls) {
  el.className = cls || '';
  el.textContent = text;
}

// Per-slab progress: one cell per slab, filled as its shards are stored.
function slabCells(box, summary) {
  let cells = [];
  let done = 0;
  box.replaceChildren();
  summary.textContent = '';
  return (slab, stored, slabs) => {
    if (cells.length !== slabs) {
      cells = Array.from({ length: slabs }, (_, i) => {
        const c = document.createElement('span');
        c.title = `slab ${i}: waiting`;
        return c;
      });
      box.replaceChildren(...cells);
      done = 0;
    }
    const c = cells[slab];
    if (!c) return;
    c.style.setProperty('--p', `${Math.round((100 * stored) / 30)}%`);
    c.title = `slab ${slab}: ${stored} of 30 shards stored`;
    if (stored >= 30 && !c.classList.contains('done')) {
      c.classList.add('done');
      done += 1;
    }
    summary.textContent = `${done} of ${slabs} slab(s) stored, 30 hosts each`;
  };
}

async function sha256(blob) {
  const d = new Uint8Array(await crypto.subtle.digest('SHA-256', await blob.arrayBuffer()));
  return [...d].map((b) => b.toString(16).padStart(2, '0')).join('');
}

function progress(bar) {
  bar.hidden = false;
  bar.value = 0;
  return (done, total) => { bar.max = total || 1; bar.value = done; };
}

async function connect() {
  client = null;
  $('upload').disabled = $('download').disabled = $('health').disabled = $('audit').disabled = true;
  $('hosts').disabled = $('net-status').disabled = true;
  const transport = $('transport').value || undefined;
  show($('status'), 'connecting…');
  try {
    const network = await (await fetch('./network.json', { cache: 'no-store' })).json();
    client = await BtfsClient.connect({ network, transport });
    const hub = network.services && network.services.hub ? ', Hub ' + network.services.hub.peer_id.slice(0, 16) + '…' : '';
    show($('status'), `connected as ${client.peerId.slice(0, 16)}… — ${client.hostCount} hosts known${hub}`, 'ok');
    $('upload').disabled = $('download').disabled = $('audit').disabled = false;
    $('health').disabled = !(network.services && network.services.guard);
    $('hosts').disabled = !(network.services && network.services.hub);
    $('net-status').disabled = !(network.services && network.services.status);
    $('faucet').hidden = !(network.services && network.services.escrow && network.services.escrow.devnet);
    hasEscrow = !!(network.services && network.services.escrow && network.services.guard);
    listUnfinished();
    $('wallet').hidden = !hasEscrow;
    if (hasEscrow) showWallet();
  } catch (err) {
    show($('status'), explain(err), 'err');
  }
}

$('upload').onclick = () => {
  const file = $('file').files[0];
  if (!file) return show($('up-result'), 'choose a file first', 'err');
  return runUpload(file, (opts) => client.uploadWithReport(file, opts));
};

// An upload or a resumed one: `start(options)` runs it; progress, result and My files follow.
async function runUpload(file, start) {
  $('upload').disabled = true;
  const started = performance.now();
  try {
    show($('up-status'), '', 'note');
    show($('up-result'), '');
    const lines = [];
    const onStatus = (line) => { lines.push(line); show($('up-status'), lines.join(' · '), 'note'); };
    const onSlab = slabCells($('slabs'), $('slabs-summary'));
    const report = await start({ onProgress: progress($('up-progress')), onStatus, onSlab });
    const link = report.link;
    const secs = (performance.now() - started) / 1000;
    const rate = (file.size / 1048576 / secs).toFixed(1);
    const guard = report.guard === undefined ? 'no Guard in this network'
      : report.guard === 'watching' ? 'the Guard watches it' : `the Guard does not watch it: ${report.guard}`;
    $('up-result').className = 'ok mono';
    const c = report.contracts;
    const paid = c ? `; ${c.committed} storage contracts, ${btt(c.locked)} locked${c.topped_up ? `, ${btt(c.topped_up)} from the devnet faucet` : ''}` : '';
    const resumed = report.resumedShards ? `; resumed: ${report.resumedShards} shards were already on their hosts and not sent again` : '';
    const where = report.encoder === 'worker' ? 'encoded in a Web Worker' : 'encoded on the page\'s thread (no Web Worker: see the console)';
    $('up-result').textContent = `${link}\n(${file.size} bytes in ${secs.toFixed(1)} s, ${rate} MiB/s — keep this link, it holds the key; ${guard}${paid}${resumed}; ${where})`;
    $('link').value = link;
    $('copy-link').hidden = false;
    await remember({ link, name: file.name || 'unnamed', size: file.size, type: file.type, uploaded: new Date().toISOString() });
    $('audit-result').replaceChildren();
    if (report.guard === 'watching') showHealth();
    if (hasEscrow) showWallet();
  } catch (err) {
    show($('up-result'), explain(err), 'err');
  } finally {
    $('upload').disabled = false;
    listUnfinished();
  }
}

// Uploads this browser started that stopped before they finished (a reload, a closed tab):
// picking the same file again finishes one without sending its placed slabs again.
async function listUnfinished() {
  const box = $('unfinished');
  let list;
  try {
    list = await client.resumeUploads();
  } catch (err) {
    $('unfinished-section').hidden = false;
    return show(box, explain(err), 'err');
  }
  $('unfinished-section').hidden = list.length === 0;
  box.className = '';
  box.replaceChildren(...list.map((u, i) => {
    const row = document.createElement('div');
    row.className = 'row';
    const label = document.createElement('label');
    label.htmlFor = `resume-${i}`;
    label.textContent = `${u.name || 'unnamed'} — ${u.size} bytes, ${u.slabsPlaced} of ${u.slabs} slab(s) placed, `
      + `started ${new Date(u.startedAt).toLocaleString()}. Choose the same file to resume:`;
    const input = document.createElement('input');
    input.type = 'file';
    input.id = `resume-${i}`;
    input.onchange = () => {
      const f = input.files[0];
      if (f) runUpload(f, (opts) => client.resumeWithReport(u.id, f, opts));
    };
    const discard = document.createElement('button');
    discard.textContent = `Discard ${u.name || 'this upload'}`;
    discard.onclick = async () => { await client.discardUpload(u.id); listUnfinished(); };
    row.append(label, input, discard);
    return row;
  }));
}

$('download').onclick = async () => {
  const link = $('link').value.trim();
  if (!isValidLink(link)) return show($('down-result'), 'that is not a complete btfs:// link (it needs the #key part)', 'err');
  $('download').disabled = true;
  try {
    // A File named and typed from the object's sealed header (a name without any directory).
    const file = await client.download(link, { onProgress: progress($('down-progress')) });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(file);
    a.download = file.name;
    a.id = 'save';
    a.textContent = `save ${file.name} (${file.size} bytes${file.type ? ', ' + file.type : ''})`;
    // A checksum to compare with the original (sha256sum on the uploader's machine).
    const sum = document.createElement('p');
    sum.className = 'note mono';
    sum.id = 'down-sha256';
    sum.textContent = `sha-256 ${await sha256(file)}`;
    $('down-result').replaceChildren(a, sum);
    $('down-result').className = 'ok';
  } catch (err) {
    show($('down-result'), explain(err), 'err');
  } finally {
    $('download').disabled = false;
  }
};

function table(head, rows) {
  const t = document.createElement('table');
  const tr = document.createElement('tr');
  for (const h of head) { const th = document.createElement('th'); th.textContent = h; tr.append(th); }
  t.append(tr);
  for (const row of rows) {
    const r = document.createElement('tr');
    for (const [text, bad] of row) {
      const td = document.createElement('td');
      td.textContent = text;
      if (bad) td.className = 'bad';
      r.append(td);
    }
    t.append(r);
  }
  return t;
}

function pastedLink(out) {
  const link = $('link').value.trim();
  if (isValidLink(link)) return link;
  show(out, 'paste a complete btfs:// link (with its #key part) into the Download field first', 'err');
  return null;
}

async function showHealth() {
  const out = $('health-result');
  const link = pastedLink(out);
  if (!link) return;
  $('health').disabled = true;
  show(out, 'asking the Guard…');
  try {
    const h = await client.health(link);
    const summary = document.createElement('p');
    summary.className = h.slabs.every((s) => s.healthy > h.repair_threshold) ? 'ok' : 'err';
    summary.textContent = `Guard epoch ${h.epoch}: ` + h.slabs.map((s) => `slab ${s.slab} ${s.healthy} of 30 healthy`).join(', ')
      + ` — ${h.repaired_shards} shard(s) repaired so far; repair at ≤ ${h.repair_threshold} healthy`;
    const failing = h.slabs.flatMap((s) => s.shards.filter((x) => x.passed === false)
      .map((x) => [[s.slab], [x.shard], [x.host.slice(0, 20) + '…'], [`${x.fails} failed audit(s) in a row`, true]]));
    out.className = '';
    out.replaceChildren(summary, ...(failing.length ? [table(['slab', 'shard', 'host', 'last audits'], failing)] : []));
  } catch (err) {
    show(out, explain(err), 'err');
  } finally {
    $('health').disabled = false;
  }
}

$('health').onclick = showHealth;

$('audit').onclick = async () => {
  const out = $('audit-result');
  const link = pastedLink(out);
  if (!link) return;
  $('audit').disabled = true;
  show(out, 'challenging every shard\'s host…');
  try {
    const r = await client.audit(link);
    const summary = document.createElement('p');
    summary.id = 'audit-summary';
    summary.className = r.failed === 0 ? 'ok' : 'err';
    summary.textContent = `${r.passed} passed, ${r.failed} failed — every proof checked in this page (${(r.elapsed_ms / 1000).toFixed(1)} s)`;
    const rows = r.slabs.flatMap((s) => s.shards.map((x) => [[s.slab], [x.shard], [x.host.slice(0, 20) + '…'],
      [x.passed ? 'proof verified' : `failed: ${x.reason}`, !x.passed], [`${x.ms} ms`]]));
    out.className = '';
    out.replaceChildren(summary, table(['slab', 'shard', 'host', 'verdict', 'time'], rows));
  } catch (err) {
    show(out, explain(err), 'err');
  } finally {
    $('audit').disabled = false;
  }
};

/** µBTT as BTT text. */
function btt(micro) {
  const whole = Math.floor(micro / 1e6), frac = String(micro % 1e6).padStart(6, '0').replace(/0+$/, '');
  return frac ? `${whole}.${frac} BTT` : `${whole} BTT`;
}

function amount(value, label) {
  const d = document.createElement('div');
  const b = document.createElement('b');
  b.textContent = btt(value);
  const s = document.createElement('span');
  s.textContent = label;
  d.append(b, s);
  return d;
}

async function showWallet() {
  const out = $('wallet-balance'), list = $('contracts');
  $('wallet-refresh').disabled = true;
  try {
    const [b, contracts] = await Promise.all([client.balance(), client.contracts()]);
    const amounts = document.createElement('div');
    amounts.className = 'amounts';
    amounts.append(amount(b.balance, 'available'), amount(b.locked, 'locked in contracts'),
      amount(b.spent, 'paid to hosts'), amount(b.refunded, 'refunded'));
    const who = document.createElement('p');
    who.className = 'note mono';
    who.textContent = `account ${b.peer}`;
    out.className = '';
    out.replaceChildren(amounts, who);
    // One row per upload (its contracts share the manifest id), newest first.
    const uploads = new Map();
    for (const c of contracts.filter((c) => c.tenant === b.peer)) {
      const key = c.manifest_id || '(offer, not committed)';
      const u = uploads.get(key) || { n: 0, states: {}, pending: 0, paid: 0, refunded: 0, paidEpochs: 0 };
      u.n += 1;
      u.states[c.state] = (u.states[c.state] || 0) + 1;
      u.pending += c.pending; u.paid += c.paid; u.refunded += c.refunded;
      u.paidEpochs += c.shards.reduce((s, x) => s + x.paid_epochs, 0);
      uploads.set(key, u);
    }
    const rows = [...uploads].reverse().map(([m, u]) => [[m.length > 20 ? m.slice(0, 16) + '…' : m], [u.n],
      [Object.entries(u.states).map(([s, n]) => `${n} ${s}`).join(', '), !u.states.active],
      [btt(u.pending)], [btt(u.paid)], [btt(u.refunded)], [u.paidEpochs]]);
    const summary = document.createElement('p');
    summary.id = 'contracts-summary';
    const active = contracts.filter((c) => c.tenant === b.peer && c.state === 'active').length;
    summary.textContent = contracts.length ? `${active} active contract(s) in ${uploads.size} upload(s)` : 'no contracts yet: upload a file';
    list.replaceChildren(summary, ...(rows.length ? [table(['object', 'contracts', 'state', 'locked', 'paid', 'refunded', 'epochs paid'], rows)] : []));
  } catch (err) {
    show(out, explain(err), 'err');
  } finally {
    $('wallet-refresh').disabled = false;
  }
}

$('wallet-refresh').onclick = showWallet;

$('faucet').onclick = async () => {
  $('faucet').disabled = true;
  try {
    await client.faucet(10e6);
    await showWallet();
  } catch (err) {
    show($('wallet-balance'), explain(err), 'err');
  } finally {
    $('faucet').disabled = false;
  }
};

// --- Upload by drag and drop, and the link's copy button. ---
const drop = $('drop');
drop.addEventListener('dragover', (e) => { e.preventDefault(); drop.classList.add('over'); });
drop.addEventListener('dragleave', () => drop.classList.remove('over'));
drop.addEventListener('drop', (e) => {
  e.preventDefault();
  drop.classList.remove('over');
  if (e.dataTransfer && e.dataTransfer.files.length) {
    $('file').files = e.dataTransfer.files;
    show($('up-status'), `${e.dataTransfer.files[0].name} ready: press Upload`, 'note');
  }
});
$('copy-link').onclick = async () => {
  try {
    await navigator.clipboard.writeText($('link').value);
    $('copy-link').textContent = 'Copied';
  } catch {
    $('link').select();
    $('copy-link').textContent = 'Select the link and copy it (the clipboard is not available here)';
  }
  setTimeout(() => { $('copy-link').textContent = 'Copy link'; }, 2000);
};

// --- My files: kept in IndexedDB (database btfs-files, store files, keyed by link). ---
function filesDb() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open('btfs-files', 1);
    req.onupgradeneeded = () => req.result.createObjectStore('files', { keyPath: 'link' });
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function filesTx(mode, f) {
  const db = await filesDb();
  return new Promise((resolve, reject) => {
    const tx = db.transaction('files', mode);
    const out = f(tx.objectStore('files'));
    tx.oncomplete = () => { db.close(); resolve(out.result); };
    tx.onerror = () => { db.close(); reject(tx.error); };
  });
}

async function remember(entry) {
  try {
    await filesTx('readwrite', (s) => s.put(entry));
  } catch (err) {
    show($('up-status'), `uploaded, but this browser could not keep it in My files: ${explain(err)}`, 'err');
  }
  await showFiles();
}

async function showFiles() {
  const out = $('files');
  let files;
  try {
    files = (await filesTx('readonly', (s) => s.getAll())) || [];
  } catch (err) {
    return show(out, `My files is not available in this browser: ${explain(err)}`, 'err');
  }
  files.sort((a, b) => (a.uploaded < b.uploaded ? 1 : -1));
  if (!files.length) return show(out, 'nothing uploaded from this browser yet', 'note');
  const t = table(['name', 'size', 'uploaded', ''], []);
  t.id = 'files-table';
  for (const f of files) {
    const tr = document.createElement('tr');
    for (const text of [f.name, `${f.size} bytes`, f.uploaded.slice(0, 19).replace('T', ' ')]) {
      const td = document.createElement('td');
      td.textContent = text;
      tr.append(td);
    }
    const td = document.createElement('td');
    const use = document.createElement('button');
    use.textContent = 'Use link';
    use.setAttribute('aria-label', `use the link of ${f.name}`);
    use.onclick = () => { $('link').value = f.link; $('link').focus(); };
    td.append(use);
    tr.append(td);
    t.append(tr);
  }
  out.className = '';
  out.replaceChildren(t);
}

$('files-export').onclick = async () => {
  const files = (await filesTx('readonly', (s) => s.getAll())) || [];
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([JSON.stringify(files, null, 2)], { type: 'application/json' }));
  a.download = 'btfs-my-files.json';
  a.click();
};

// --- Hosts: the Hub's ranking, every score recomputed in this page. ---
$('hosts').onclick = async () => {
  $('hosts').disabled = true;
  try {
    const hosts = await client.hosts();
    const f = (x) => x.toFixed(2);
    const rows = hosts.map((h) => {
      const r = h.recomputed;
      return [[h.peer_id.slice(0, 20) + '…'], [h.facts.online ? 'yes' : 'no', !h.facts.online], [h.score.total.toFixed(3)],
        [r.total.toFixed(3), !!h.problem], [f(r.space)], [f(r.uptime)], [f(r.age)], [f(r.proximity)], [f(r.price)],
        [f(r.audits)], [f(r.version)], [h.problem || (h.excluded ? `excluded: ${h.excluded}` : 'ad verified, score agrees'), !!h.problem]];
    });
    const online = hosts.filter((h) => h.facts.online).length;
    const bad = hosts.filter((h) => h.problem).length;
    show($('hosts-summary'), `${hosts.length} hosts, ${online} online; ${bad ? `${bad} host(s) where the Hub's word does not check out` : `all ${hosts.length} scores recomputed in this page agree with the Hub`}`, bad ? 'err' : 'ok');
    $('hosts-table').replaceChildren(table(['host', 'online', 'Hub score', 'recomputed', 'space', 'uptime', 'age', 'proximity', 'price', 'audits', 'version', 'check'], rows));
  } catch (err) {
    show($('hosts-summary'), explain(err), 'err');
  } finally {
    $('hosts').disabled = false;
  }
};

// --- Network health from the Status server. ---
$('net-status').onclick = async () => {
  $('net-status').disabled = true;
  try {
    const s = await client.networkStatus();
    const t = s.totals;
    const served = t.requests_served + t.requests_failed;
    const pct = (n, d) => (d ? (100 * n / d).toFixed(1) : '0.0');
    show($('net-summary'), `${t.hosts} hosts, ${t.online} online; ${t.shards_held} shards held, ${pct(t.used_bytes, t.capacity_bytes)} % of ${(t.capacity_bytes / 2 ** 30).toFixed(1)} GiB used; ${t.requests_served} requests served, ${pct(t.requests_failed, served)} % failed`,
      t.online === t.hosts ? 'ok' : 'err');
  } catch (err) {
    show($('net-summary'), explain(err), 'err');
  } finally {
    $('net-status').disabled = false;
  }
};
$('transport').onchange = connect;
await init();
showFiles();
await connect();
