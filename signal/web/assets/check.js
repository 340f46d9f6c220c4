// The diagnostics page, after WebRTC's "Trickle ICE" sample: it gets the
// ICE servers from /connect exactly as a call does and gathers candidates
// against each URL separately, one RTCPeerConnection per URL, so every
// server and transport gets its own verdict and timing.

import { openSignal, iceServersOf, randomName } from './signal.js';

const $ = (id) => document.getElementById(id);

// How long one URL may take. Browsers give up on an unreachable STUN or
// TURN server after about this long anyway.
const limitMs = 10000;

// fetchIceServers joins a throwaway room, takes the WsIceServers answer to
// WsInit and leaves; a random room cannot disturb anyone's call.
function fetchIceServers() {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => fail('icebox sent no ICE servers within 10 s'), 10000);
    const sig = openSignal('check-' + randomName(12), (id, data) => {
      if (id === 'WsIceServers') {
        clearTimeout(timer);
        sig.close();
        resolve(iceServersOf(data));
      } else if (id === 'WsError') {
        fail(`icebox refused: ${data.message} (${data.code})`);
      }
    }, (text) => fail(text));
    function fail(text) {
      clearTimeout(timer);
      sig.close();
      reject(new Error(text));
    }
  });
}

// testsFor turns the server list into one test per URL.
function testsFor(servers) {
  const tests = [];
  for (const s of servers) {
    for (const url of [].concat(s.urls)) {
      const scheme = url.split(':')[0].toLowerCase();
      if (scheme === 'stun' || scheme === 'stuns') {
        tests.push({ kind: 'stun', name: 'STUN', url, server: { urls: url }, want: 'srflx', policy: 'all' });
      } else if (scheme === 'turn' || scheme === 'turns') {
        const transport = scheme === 'turns' ? 'TLS' : /[?&]transport=tcp/i.test(url) ? 'TCP' : 'UDP';
        const server = { urls: url, username: s.username, credential: s.credential };
        tests.push({ kind: 'turn-' + transport.toLowerCase(), name: 'TURN over ' + transport, url, server, want: 'relay', policy: 'relay' });
      }
    }
  }
  return tests;
}

// gather collects candidates for one URL until the first one of the wanted
// type arrives, gathering ends, or the time limit passes.
function gather(test) {
  return new Promise((resolve) => {
    const t0 = performance.now();
    const errors = [];
    let pc;
    const finish = (candidate) => {
      clearTimeout(timer);
      pc.close();
      resolve({ candidate, errors, ms: Math.round(performance.now() - t0) });
    };
    const timer = setTimeout(() => finish(null), limitMs);
    pc = new RTCPeerConnection({ iceServers: [test.server], iceTransportPolicy: test.policy });
    pc.createDataChannel('check'); // something to negotiate, so ICE starts
    pc.onicecandidate = (e) => {
      if (!e.candidate) finish(null);
      else if (e.candidate.type === test.want) finish(e.candidate);
    };
    pc.onicecandidateerror = (e) => {
      errors.push(`${e.errorCode} ${e.errorText}`.trim());
    };
    pc.createOffer().then((o) => pc.setLocalDescription(o)).catch((err) => {
      errors.push(err.message);
      finish(null);
    });
  });
}

// verdict says in plain words what one test's result means.
function verdict(test, r) {
  const c = r.candidate;
  if (c && test.kind === 'stun') {
    return { ok: true, text: `answered: your public address, as icebox sees it, is ${hostPort(c.address, c.port)}` };
  }
  if (c) {
    const over = c.relayProtocol ? ` (browser confirms ${c.relayProtocol.toUpperCase()})` : '';
    return { ok: true, text: `allocated relay address ${hostPort(c.address, c.port)}${over}` };
  }
  // Browsers report a server's error response with its STUN error code
  // (300-699) and a server they could not reach with 701.
  const codes = r.errors.map((e) => parseInt(e, 10));
  const refused = codes.find((c) => c >= 300 && c < 700);
  let text;
  if (refused) {
    text = `refused by the server (${r.errors.join('; ')})`;
    if ([400, 401, 403, 431].includes(refused)) {
      text += '. The credentials were not accepted: does the TURN server share icebox\'s secret, and is this device\'s clock right?';
    } else if (refused === 486) {
      text += '. Too many relays are open for this user.';
    }
  } else if (blockedOnTheWay(test, r, codes)) {
    // A TCP connection that fails before the limit was refused or stopped
    // before it reached icebox; a firewall that drops packets makes it wait.
    text = `this browser could not open a TCP connection to ${target(test.url)} (${r.errors.join('; ')}) after ${r.ms} ms: ` +
      'it was refused or stopped before it reached icebox, by a firewall that rejects this port, ' +
      'a proxy or browser policy on this device, or Chromium\'s --host-resolver-rules (test setups), ' +
      'which apply to WebRTC\'s TCP connections too and so block TURN over TCP and TLS while UDP works.';
  } else {
    text = r.ms >= limitMs ? `no answer within ${limitMs / 1000} s` : 'no answer';
    if (r.errors.length) text += ` (${r.errors.join('; ')})`;
    text += '. A firewall between here and icebox may block this port or transport.';
  }
  return { ok: false, text };
}

// blockedOnTheWay is a TCP or TLS test whose connection failed (701)
// before the time limit: refused or stopped, where packets a firewall
// drops would leave it waiting.
function blockedOnTheWay(test, r, codes) {
  return (test.kind === 'turn-tcp' || test.kind === 'turn-tls') && r.ms < limitMs && codes.includes(701);
}

// target is the host:port of a STUN or TURN URL.
function target(url) {
  return url.replace(/^[a-z]+:/i, '').split('?')[0];
}

function hostPort(addr, port) {
  return addr && addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}

function row(test) {
  const tr = document.createElement('tr');
  tr.dataset.kind = test.kind;
  const what = document.createElement('td');
  what.append(test.name, document.createElement('br'));
  const small = document.createElement('small');
  small.textContent = test.url;
  what.append(small);
  const result = document.createElement('td');
  result.className = 'detail';
  result.textContent = 'trying…';
  const time = document.createElement('td');
  time.className = 'time';
  tr.append(what, result, time);
  $('results').append(tr);
  return { tr, result, time };
}

async function run() {
  $('run').disabled = true;
  $('results').textContent = '';
  const summary = $('summary');
  summary.className = 'message';
  summary.textContent = 'Checking…';
  delete summary.dataset.done;
  try {
    if (!window.RTCPeerConnection) {
      throw new Error('This browser has no WebRTC (RTCPeerConnection is missing), so it cannot call at all.');
    }
    const servers = await fetchIceServers();
    $('servers').textContent = servers.flatMap((s) => [].concat(s.urls)).join('\n');
    const tests = testsFor(servers);
    if (!tests.length) throw new Error('icebox offered no STUN or TURN servers.');
    const outcomes = await Promise.all(tests.map(async (test) => {
      const cells = row(test);
      const r = await gather(test);
      const v = verdict(test, r);
      cells.result.textContent = (v.ok ? '✔ ' : '✘ ') + v.text;
      cells.result.classList.add(v.ok ? 'good' : 'bad');
      cells.time.textContent = r.ms + ' ms';
      cells.tr.dataset.ok = v.ok;
      return { test, ok: v.ok, blocked: !v.ok && blockedOnTheWay(test, r, r.errors.map((e) => parseInt(e, 10))), cells };
    }));
    // TURN over UDP to the same address working rules out icebox being
    // down or not listening: the TCP connection stopped on the way.
    for (const o of outcomes.filter((o) => o.blocked)) {
      if (outcomes.some((u) => u.ok && u.test.kind === 'turn-udp' && target(u.test.url) === target(o.test.url))) {
        o.cells.result.textContent += ' TURN over UDP to the same address works, so icebox is up and listening.';
      }
    }
    // Say what was not tried, so a missing transport is not mistaken for a pass.
    for (const [kind, name] of [['stun', 'STUN'], ['turn-udp', 'TURN over UDP'], ['turn-tcp', 'TURN over TCP'], ['turn-tls', 'TURN over TLS']]) {
      if (!tests.some((t) => t.kind === kind)) {
        row({ kind, name, url: '' }).result.textContent = '– not offered by this icebox';
      }
    }
    summarize(outcomes);
  } catch (err) {
    summary.textContent = err.message;
    summary.classList.add('bad');
  }
  summary.dataset.done = 'true';
  $('run').disabled = false;
}

function summarize(outcomes) {
  const ok = (prefix) => outcomes.some((o) => o.ok && o.test.kind.startsWith(prefix));
  const summary = $('summary');
  let text;
  if (ok('turn')) {
    const works = ['udp', 'tcp', 'tls'].filter((t) => ok('turn-' + t)).map((t) => t.toUpperCase());
    const list = works.length > 1 ? works.slice(0, -1).join(', ') + ' and ' + works.at(-1) : works[0];
    text = `Calls from here will work: TURN relays over ${list}.`;
    if (ok('stun')) text += ' STUN answered too, so a direct path is tried first.';
    if (outcomes.some((o) => !o.ok)) text += ' Some tests failed; see below.';
    summary.className = 'good';
  } else if (ok('stun')) {
    text = 'STUN answered but no TURN relay could be allocated: calls work only when a direct path exists.';
    summary.className = 'unknown';
  } else {
    text = 'Neither STUN nor TURN answered from here: calls through icebox will fail from this network.';
    summary.className = 'bad';
  }
  summary.textContent = text;
}

$('run').onclick = run;
run();
