// The call page: a tab calls another tab, or answers the talk's app, or
// (as "controller") calls a device, through icebox's /connect, STUN and
// TURN.
//
// Who offers. The page opts in to WsPresence (docs/protocol.md), so the
// server tells it who is in the room when it joins and who joins or leaves
// later, and whether each peer is a page (opted in too) or not (the app,
// or a device built from the talk). From that alone, both sides agree:
//   - Two pages: the one that joins later offers, the other answers. No
//     glare, whatever the timing.
//   - A page and the app: the app offers, always, and never answers, so the
//     page never offers to it; it answers every offer the app sends, on a
//     fresh RTCPeerConnection. When the app was there first, its kept offer
//     arrives right after the presence list and is answered like any other.
//   - A page in controller role and a peer that is not a page (a device
//     built from the talk): the page offers, as the app would.
// Any offer that arrives is answered on a fresh RTCPeerConnection, so no
// state of an earlier call can spoil the answer.
//
// Data channels. The app opens its "input" channel itself with stream id
// 0 (not negotiated). The page's own chat channel is negotiated on a fixed
// id far from the ids an app's channel may take (CHAT_ID), and exists only
// between pages; the page never creates a channel with a fixed low id.

import { openSignal, iceServersOf, randomName } from './signal.js';

const $ = (id) => document.getElementById(id);

const room = pickRoom();
// CHAT_ID is the stream id of the chat channel between two pages:
// negotiated, so both create it without waiting for each other, and high,
// so it never takes the id of a channel an app opens (the talk's "input"
// is 0; browsers hand out the lowest free ids). Chromium allows 0..1023.
const CHAT_ID = 1000;
// MAX_COMMANDS is how many received commands the device view lists.
const MAX_COMMANDS = 100;

const role = pickRole();
let sig = null; // signaling connection, while started
let pc = null;
let dc = null; // the chat data channel of pc, between pages only
let input = null; // the "input" channel of pc: received (device) or created (controller)
let peer = null; // {id, presence} of the other side, from WsPresence
let met = ''; // how we met peer: 'here' (it was there first) or 'joined' (it came later)
let local = null; // camera and microphone, or null when refused
let iceServers = null; // from WsIceServers; null before the first
let inbox = Promise.resolve(); // frames are handled one at a time, in order
let early = []; // remote candidates that came before their description; kept
// across fresh connections for the same peer, as the app's may overtake its offer
let outbox = []; // local candidates waiting to be sent together
let flushTimer = 0;
let statsTimer = 0;

// For the browser test and for poking at the call from the devtools.
window.icebox = {
  get pc() { return pc; },
  get input() { return input; },
  get peer() { return peer; },
  get met() { return met; },
  get chat() { return dc; },
  role,
};

// pickRole reads ?role=controller; anything else is a device, which shows
// the commands it receives.
function pickRole() {
  const r = new URLSearchParams(location.search).get('role') === 'controller' ? 'controller' : 'device';
  $('role').value = r;
  $('device-view').hidden = r !== 'device';
  $('controller-view').hidden = r !== 'controller';
  return r;
}

function pickRoom() {
  const q = new URLSearchParams(location.search).get('room') || '';
  let name = q.trim().slice(0, 64);
  if (!/^[\w.-]+$/.test(name)) {
    name = randomName(8);
    // Put the room in the address so a reload stays in it and the address
    // bar itself is the link to share.
    history.replaceState(null, '', '?room=' + name);
  }
  $('room').value = name;
  const link = $('share');
  // The link invites the other side as a device, whatever this tab is.
  link.href = location.origin + location.pathname + '?room=' + encodeURIComponent(name);
  link.textContent = link.href;
  link.target = '_blank';
  return name;
}

// say shows how the call is going; it changes as the call does.
function say(text) {
  $('message').textContent = text;
}

// mediaNote says why there is no camera; it stays for the whole call.
function mediaNote(text) {
  $('media-note').textContent = text;
}

function logLine(text, cls) {
  const li = document.createElement('li');
  li.textContent = text;
  if (cls) li.className = cls;
  const log = $('log');
  log.append(li);
  log.scrollTop = log.scrollHeight;
}

async function start() {
  if (!window.RTCPeerConnection) {
    say('This browser cannot make calls: it has no WebRTC (RTCPeerConnection is missing). ' +
        'Try a current Chrome, Firefox or Safari.');
    return;
  }
  say('');
  mediaNote('');
  $('start').disabled = true;
  $('relay').disabled = true;
  $('role').disabled = true;
  $('hangup').disabled = false;
  local = await getMedia();
  $('sig').textContent = 'connecting…';
  sig = openSignal(room, (id, data) => {
    inbox = inbox.then(() => onFrame(id, data)).catch((err) => {
      console.error('icebox:', err);
      say('Call setup failed: ' + err.message);
    });
  }, (text) => {
    $('sig').textContent = text;
    sig = null;
  }, { presence: true });
}

// getMedia asks for camera and microphone. Without them the call still
// goes on, receive-only with chat, and the user is told why.
async function getMedia() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    mediaNote(window.isSecureContext
      ? 'This browser offers no camera access. You can still see the other side and chat.'
      : 'The camera needs a secure page: open icebox over HTTPS (signal.tls), or as ' +
        'localhost on the same computer. You can still see the other side and chat.');
    return null;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    $('local').srcObject = stream;
    return stream;
  } catch (err) {
    const why = {
      NotAllowedError: 'Camera and microphone were refused. To use them, allow them in the address bar, then Hang up and Start again',
      NotFoundError: 'No camera or microphone was found',
      NotReadableError: 'The camera or microphone is busy in another program',
    }[err.name] || 'The camera could not start (' + err.name + ')';
    mediaNote(why + '. You can still see the other side and chat.');
    return null;
  }
}

async function onFrame(id, data) {
  if (!sig) return; // hung up while frames were queued
  switch (id) {
    case 'WsIceServers':
      if (!iceServers) {
        $('sig').textContent = 'connected to room ' + room;
      }
      iceServers = iceServersOf(data);
      if (pc) {
        // Fresh TURN credentials before the old ones expire; a browser
        // that refuses them keeps the old ones, which still work a while.
        try {
          pc.setConfiguration(rtcConfig());
        } catch (err) {
          console.warn('icebox: new ICE servers not applied:', err);
        }
      }
      return;
    case 'WsPresence':
      return onPresence(data);
    case 'WsSDPOffer':
      return onOffer(data);
    case 'WsSDPAnswer':
      return onAnswer(data);
    case 'WsIceCandidates':
      for (const c of data.iceCandidates || []) {
        if (pc && pc.remoteDescription) await addCandidate(c);
        else early.push(c);
      }
      return;
    case 'WsError':
      say(`icebox refused the call: ${data.message} (${data.code})`);
  }
}

// onPresence follows who is in the room; see "Who offers" above.
async function onPresence(data) {
  const peers = data.peers || [];
  switch (data.event) {
    case 'here':
      if (!peers.length) {
        waiting();
        return;
      }
      setPeer(peers[peers.length - 1]);
      met = 'here';
      if (peer.presence) return callPage(); // we came later: we offer
      return meetApp();
    case 'joined':
      setPeer(peers[0]);
      met = 'joined';
      if (peer.presence) {
        say('Another page joined; it calls this one.');
        return;
      }
      return meetApp();
    case 'left':
      if (peer && peers.some((p) => p.id === peer.id)) {
        logLine('the other side left', 'system');
        closePeer();
        peer = null;
        waiting();
      }
  }
}

// setPeer notes who the other side is; a different peer starts afresh.
function setPeer(p) {
  if (!peer || peer.id !== p.id) {
    closePeer();
    early = [];
  }
  peer = { id: p.id, presence: !!p.presence };
}

// waiting says, for a tab alone in its room after Start, whom it waits
// for and how to bring them in.
function waiting() {
  $('conn').textContent = 'waiting for the other side';
  $('conn').className = '';
  say(`Waiting for the other side: nobody else is in this room yet. Send them the link above, or open it in a second tab and press Start there; an app joins with controllerId "${room}".`);
}

// meetApp handles a peer that is not a page: the app, which offers, or in
// controller role a device, which waits for an offer.
async function meetApp() {
  if (role === 'controller') {
    say('');
    newPeer(false);
    await sendOffer();
    return;
  }
  say('The app is here. Waiting for its offer…');
}

// callPage offers a call with camera, microphone and chat to another page.
async function callPage() {
  say('');
  newPeer(true);
  await sendOffer();
}

function rtcConfig() {
  return { iceServers: iceServers || [], iceTransportPolicy: $('relay').checked ? 'relay' : 'all' };
}

function closePeer() {
  if (pc) pc.close();
  pc = null;
  dc = null;
  input = null;
  $('remote').srcObject = null;
  $('text').disabled = true;
  $('send').disabled = true;
  setKeypad(false);
}

// newPeer starts a fresh RTCPeerConnection: for a call between pages (media
// and chat), or a data-only one with the app or a device. offering says
// whether this side will send the offer: only then are receive-only
// transceivers added for a tab without camera, since an answer takes its
// sections from the offer.
function newPeer(withPage, offering = true) {
  closePeer();
  const me = new RTCPeerConnection(rtcConfig());
  pc = me;
  outbox = [];
  if (withPage) {
    if (local) {
      for (const t of local.getTracks()) me.addTrack(t, local);
    } else if (offering) {
      me.addTransceiver('audio', { direction: 'recvonly' });
      me.addTransceiver('video', { direction: 'recvonly' });
    }
    openChat(me);
  }
  if (role === 'controller' && (withPage || offering)) {
    // Like the app: not negotiated, ordered; the browser picks a free id.
    // Never when answering the app: its own "input" is on its way, on id
    // 0, which this side's first channel could otherwise take.
    useInput(me, me.createDataChannel('input', { ordered: true }));
  }
  me.ondatachannel = (e) => {
    if (pc === me && e.channel.label === 'input') useInput(me, e.channel);
  };
  me.onicecandidate = (e) => {
    if (pc !== me) return;
    if (e.candidate && e.candidate.candidate) {
      const c = e.candidate;
      outbox.push({ candidate: c.candidate, sdpMLineIndex: c.sdpMLineIndex ?? 0, sdpMid: c.sdpMid });
      // Candidates come in bursts; one frame per burst keeps well under
      // the server's frame rate limit.
      if (!flushTimer) flushTimer = setTimeout(flush, 50);
    } else {
      flush();
    }
  };
  me.ontrack = (e) => {
    if (pc !== me) return;
    $('remote').srcObject = e.streams[0] || new MediaStream([e.track]);
  };
  me.onconnectionstatechange = () => {
    if (pc !== me) return;
    showState(me.connectionState);
  };
  showState(me.connectionState);
  clearInterval(statsTimer);
  statsTimer = setInterval(showStats, 1000);
}

function openChat(me) {
  const ch = me.createDataChannel('chat', { negotiated: true, id: CHAT_ID });
  dc = ch;
  ch.onopen = () => {
    if (dc !== ch) return;
    $('text').disabled = false;
    $('send').disabled = false;
    logLine('chat open', 'system');
  };
  ch.onclose = () => {
    if (dc !== ch) return;
    $('text').disabled = true;
    $('send').disabled = true;
  };
  ch.onmessage = (e) => logLine('them: ' + e.data);
}

// useInput shows what arrives on an "input" channel (device role) or lets
// the keypad send on it (controller role).
function useInput(me, ch) {
  if (pc !== me) return;
  input = ch;
  ch.binaryType = 'arraybuffer';
  let opened = false;
  // A received channel may be open already and still fire open.
  ch.onopen = () => {
    if (input !== ch || opened) return;
    opened = true;
    logLine('input channel open', 'system');
    setKeypad(role === 'controller');
  };
  ch.onclose = () => {
    if (input === ch) setKeypad(false);
  };
  ch.onmessage = (e) => {
    if (input !== ch) return;
    if (typeof e.data === 'string') {
      showCommand(null, 'text "' + e.data.slice(0, 40) + '", not a command');
      return;
    }
    for (const b of new Uint8Array(e.data)) showCommand(b);
  };
  if (ch.readyState === 'open') ch.onopen();
}

// A command is one byte: key + 128 × state, as the talk's app sends it
// (key is the ordinal of the app's key, state that of pressed/released).
function showCommand(b, note) {
  const li = document.createElement('li');
  li.textContent = note || `key ${b & 127} · state ${b >> 7}`;
  if (b !== null) li.dataset.byte = String(b);
  const list = $('commands');
  list.prepend(li);
  while (list.children.length > MAX_COMMANDS) list.lastElementChild.remove();
  $('command-count').textContent = String(Number($('command-count').textContent) + 1);
}

function sendCommand(key, state) {
  if (!input || input.readyState !== 'open') return;
  const b = key + 128 * state;
  input.send(new Uint8Array([b]));
  logLine(`sent key ${key} · state ${state}`, 'me');
}

function setKeypad(on) {
  for (const btn of document.querySelectorAll('#keypad button')) btn.disabled = !on;
}

function flush() {
  clearTimeout(flushTimer);
  flushTimer = 0;
  if (outbox.length && sig) {
    sig.send('WsIceCandidates', { controllerId: room, iceCandidates: outbox });
  }
  outbox = [];
}

function sendDescription() {
  const d = pc.localDescription;
  const id = d.type === 'offer' ? 'WsSDPOffer' : 'WsSDPAnswer';
  sig.send(id, { type: d.type, sdp: d.sdp, controllerId: room });
}

async function sendOffer() {
  const me = pc;
  const offer = await me.createOffer();
  if (pc !== me) return;
  await me.setLocalDescription(offer);
  if (pc === me) sendDescription();
}

// onOffer answers on a fresh RTCPeerConnection, shaped like the offer: a
// call with media for an offer with audio or video, data only otherwise
// (the app's offer has only its data channel; answering it from a
// connection that had offered media is what made Chromium refuse to start
// SCTP).
async function onOffer(data) {
  const media = /^m=(audio|video) /m.test(data.sdp || '');
  newPeer(media, false);
  const me = pc;
  await me.setRemoteDescription({ type: 'offer', sdp: data.sdp });
  await addEarly();
  const answer = await me.createAnswer();
  if (pc !== me) return;
  await me.setLocalDescription(answer);
  if (pc === me) sendDescription();
}

async function onAnswer(data) {
  if (!pc || pc.signalingState !== 'have-local-offer') return; // stale
  await pc.setRemoteDescription({ type: 'answer', sdp: data.sdp });
  await addEarly();
}

async function addEarly() {
  const list = early;
  early = [];
  for (const c of list) await addCandidate(c);
}

async function addCandidate(c) {
  try {
    await pc.addIceCandidate(c);
  } catch (err) {
    // Candidates of a connection that was replaced, or of a peer that
    // left, do not fit the current description; they are not needed.
    console.debug('icebox: candidate dropped', err.message);
  }
}

function showState(state) {
  $('conn').textContent = state;
  $('conn').className = { connected: 'good', failed: 'bad' }[state] || '';
  if (state === 'failed') {
    say('The call could not connect. Try "Relay only", and open the Check page to see whether TURN works here.');
  } else if (state === 'disconnected') {
    say('The other side left or lost its network. Keep this tab open: the call starts again when someone opens the link.');
  } else if (state === 'connected') {
    say('');
  }
}

const pathWords = {
  host: 'direct, same network',
  srflx: 'direct, through NAT (STUN)',
  prflx: 'direct, through NAT',
  relay: 'through the TURN relay',
};

async function showStats() {
  if (!pc) return;
  const stats = await pc.getStats();
  let pair = null;
  let video = null;
  stats.forEach((s) => {
    if (s.type === 'transport' && s.selectedCandidatePairId) pair = stats.get(s.selectedCandidatePairId);
    if (s.type === 'inbound-rtp' && s.kind === 'video') video = s;
  });
  if (!pair) {
    // Firefox has no selectedCandidatePairId; it flags the pair instead.
    stats.forEach((s) => {
      if (s.type === 'candidate-pair' && (s.selected || (s.nominated && s.state === 'succeeded'))) pair = s;
    });
  }
  const l = pair && stats.get(pair.localCandidateId);
  const r = pair && stats.get(pair.remoteCandidateId);
  if (l && r) {
    const kind = l.candidateType === 'relay' || r.candidateType === 'relay' ? 'relay' : l.candidateType;
    let text = `${pathWords[kind] || kind} (${l.candidateType} ↔ ${r.candidateType}, `;
    text += l.relayProtocol ? `TURN over ${l.relayProtocol.toUpperCase()}` : l.protocol;
    $('pair').textContent = text + ')';
    $('pair').dataset.local = l.candidateType;
    $('pair').dataset.remote = r.candidateType;
  } else {
    $('pair').textContent = '–';
  }
  $('rtt').textContent = pair && pair.currentRoundTripTime !== undefined
    ? Math.round(pair.currentRoundTripTime * 1000) + ' ms' : '–';
  $('bytes').textContent = video ? `${(video.bytesReceived / 1024).toFixed(0)} KiB, ${video.framesPerSecond || 0} fps` : '–';
}

function hangup() {
  clearInterval(statsTimer);
  flush();
  if (sig) sig.close();
  sig = null;
  closePeer();
  peer = null;
  early = [];
  iceServers = null;
  if (local) for (const t of local.getTracks()) t.stop();
  local = null;
  $('local').srcObject = null;
  $('remote').srcObject = null;
  $('start').disabled = false;
  $('relay').disabled = false;
  $('role').disabled = false;
  $('hangup').disabled = true;
  $('sig').textContent = 'not connected';
  showState('closed');
}

$('start').onclick = start;
$('hangup').onclick = hangup;
$('room-form').onsubmit = (e) => {
  e.preventDefault();
  const name = $('room').value.trim();
  const q = new URLSearchParams({ room: name || randomName(8) });
  if (role === 'controller') q.set('role', 'controller');
  location.search = '?' + q;
};
$('role').onchange = () => {
  const q = new URLSearchParams(location.search);
  q.set('room', room);
  if ($('role').value === 'controller') q.set('role', 'controller');
  else q.delete('role');
  location.search = '?' + q;
};
// The keypad sends state 0 when a key goes down and state 1 when it comes
// up, one byte each, as the app does for its keys.
for (const btn of document.querySelectorAll('#keypad button')) {
  const key = Number(btn.dataset.key);
  btn.onpointerdown = () => sendCommand(key, 0);
  btn.onpointerup = () => sendCommand(key, 1);
  btn.onkeydown = (e) => {
    if (e.key === 'Enter' || e.key === ' ') {
      e.preventDefault();
      sendCommand(key, 0);
      sendCommand(key, 1);
    }
  };
}
$('chat-form').onsubmit = (e) => {
  e.preventDefault();
  const text = $('text').value;
  if (!text || !dc || dc.readyState !== 'open') return;
  dc.send(text);
  logLine('me: ' + text, 'me');
  $('text').value = '';
};
