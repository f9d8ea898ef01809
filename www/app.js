// The dApp page: BtfsClient from the btfs-client npm package (served at ./pkg/), the network
// description from ./network.json (both served by `cargo xtask demo`).
import init, { BtfsClient, isValidLink } from './pkg/btfs_client.js';

const $ = (id) => document.getElementById(id);
let client = null;

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
  $('upload').disabled = $('download').disabled = true;
  const transport = $('transport').value || undefined;
  show($('status'), 'connecting…');
  try {
    const network = await (await fetch('./network.json', { cache: 'no-store' })).json();
    client = await BtfsClient.connect({ network, transport });
    const hub = network.services && network.services.hub ? ', Hub ' + network.services.hub.peer_id.slice(0, 16) + '…' : '';
    show($('status'), `connected as ${client.peerId.slice(0, 16)}… — ${client.hostCount} hosts known${hub}`, 'ok');
    $('upload').disabled = $('download').disabled = false;
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
    const link = await client.upload(file, { onProgress: progress($('up-progress')) });
    const secs = (performance.now() - started) / 1000;
    const rate = (file.size / 1048576 / secs).toFixed(1);
    $('up-result').className = 'ok mono';
    $('up-result').textContent = `${link}\n(${file.size} bytes in ${secs.toFixed(1)} s, ${rate} MiB/s — keep this link, it holds the key)`;
    $('link').value = link;
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

$('transport').onchange = connect;
await init();
await connect();
