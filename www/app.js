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

function progress(bar) {
  bar.hidden = false;
  bar.value = 0;
  return (done, total) => { bar.max = total || 1; bar.value = done; };
}

async function connect() {
  client = null;
  $('upload').disabled = $('download').disabled = $('health').disabled = $('audit').disabled = true;
  const transport = $('transport').value || undefined;
  show($('status'), 'connecting…');
  try {
    const network = await (await fetch('./network.json', { cache: 'no-store' })).json();
    client = await BtfsClient.connect({ network, transport });
    const hub = network.services && network.services.hub ? ', Hub ' + network.services.hub.peer_id.slice(0, 16) + '…' : '';
    show($('status'), `connected as ${client.peerId.slice(0, 16)}… — ${client.hostCount} hosts known${hub}`, 'ok');
    $('upload').disabled = $('download').disabled = $('audit').disabled = false;
    $('health').disabled = !(network.services && network.services.guard);
    hasEscrow = !!(network.services && network.services.escrow && network.services.guard);
    $('wallet').hidden = !hasEscrow;
    if (hasEscrow) showWallet();
  } catch (err) {
    show($('status'), explain(err), 'err');
  }
}

$('upload').onclick = async () => {
  const file = $('file').files[0];
  if (!file) return show($('up-result'), 'choose a file first', 'err');
  $('upload').disabled = true;
  const started = performance.now();
  try {
    show($('up-status'), '', 'note');
    const lines = [];
    const onStatus = (line) => { lines.push(line); show($('up-status'), lines.join(' · '), 'note'); };
    const report = await client.uploadWithReport(file, { onProgress: progress($('up-progress')), onStatus });
    const link = report.link;
    const secs = (performance.now() - started) / 1000;
    const rate = (file.size / 1048576 / secs).toFixed(1);
    const guard = report.guard === undefined ? 'no Guard in this network'
      : report.guard === 'watching' ? 'the Guard watches it' : `the Guard does not watch it: ${report.guard}`;
    $('up-result').className = 'ok mono';
    const c = report.contracts;
    const paid = c ? `; ${c.committed} storage contracts, ${btt(c.locked)} locked${c.topped_up ? `, ${btt(c.topped_up)} from the devnet faucet` : ''}` : '';
    $('up-result').textContent = `${link}\n(${file.size} bytes in ${secs.toFixed(1)} s, ${rate} MiB/s — keep this link, it holds the key; ${guard}${paid})`;
    $('link').value = link;
    $('audit-result').replaceChildren();
    if (report.guard === 'watching') showHealth();
    if (hasEscrow) showWallet();
  } catch (err) {
    show($('up-result'), explain(err), 'err');
  } finally {
    $('upload').disabled = false;
  }
};

$('download').onclick = async () => {
  const link = $('link').value.trim();
  if (!isValidLink(link)) return show($('down-result'), 'that is not a complete btfs:// link (it needs the #key part)', 'err');
  $('download').disabled = true;
  try {
    const blob = await client.download(link, { onProgress: progress($('down-progress')) });
    const a = document.createElement('a');
    a.href = URL.createObjectURL(blob);
    a.download = 'btfs-download';
    a.textContent = `save ${blob.size} bytes`;
    $('down-result').replaceChildren(a);
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
$('transport').onchange = connect;
await init();
await connect();
