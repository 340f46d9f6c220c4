// The call page: two tabs in the same room call each other through
// icebox's /connect, STUN and TURN.
//
// Who offers. icebox tells nobody that a peer has joined, and frames may
// carry only the protocol's keys, so there is no "hello" message and no
// way to agree on roles beforehand. Instead every tab sends an offer as
// soon as it has its ICE servers; the offer is the hello. Then:
//   - An offer that finds us with our own offer outstanding is glare. The
//     tab whose SDP session id (the random number on the o= line) is lower
//     is polite: it drops its offer and answers. The other ignores the
//     incoming offer and sends its own offer again, because the peer may
//     have joined after our first offer went out and never seen it. The
//     copy is the current local description, which by now lists the
//     candidates gathered so far, so none are lost with the first copy.
//   - An offer with the session id of the peer we already talk to is such
//     a copy and is ignored.
//   - Any other offer means a new peer (the other tab reloaded): start a
//     fresh connection and answer it.
// Both tabs reach the same decision from the same two session ids, so the
// outcome does not depend on timing or on whether the server kept the
// first offer for the late joiner.

import { openSignal, iceServersOf, randomName } from './signal.js';

const $ = (id) => document.getElementById(id);

const room = pickRoom();
let sig = null; // signaling connection, while started
let pc = null;
let dc = null; // the chat data channel of pc
let local = null; // camera and microphone, or null when refused
let iceServers = [];
let inbox = Promise.resolve(); // frames are handled one at a time, in order
let early = []; // remote candidates that came before their description
let outbox = []; // local candidates waiting to be sent together
let flushTimer = 0;
let statsTimer = 0;

// For the browser test and for poking at the call from the devtools.
window.icebox = { get pc() { return pc; } };

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
  });
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
      iceServers = iceServersOf(data);
      if (!pc) {
        $('sig').textContent = 'connected to room ' + room;
        newPeer();
        await sendOffer();
      } else {
        // Fresh TURN credentials before the old ones expire; a browser
        // that refuses them keeps the old ones, which still work a while.
        try {
          pc.setConfiguration(rtcConfig());
        } catch (err) {
          console.warn('icebox: new ICE servers not applied:', err);
        }
      }
      return;
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

function rtcConfig() {
  return { iceServers, iceTransportPolicy: $('relay').checked ? 'relay' : 'all' };
}

function newPeer() {
  if (pc) pc.close();
  const me = new RTCPeerConnection(rtcConfig());
  pc = me;
  early = [];
  outbox = [];
  if (local) {
    for (const t of local.getTracks()) me.addTrack(t, local);
  } else {
    me.addTransceiver('audio', { direction: 'recvonly' });
    me.addTransceiver('video', { direction: 'recvonly' });
  }
  // Negotiated with a fixed id, both tabs create the same channel without
  // waiting for each other: no ondatachannel, nothing to undo on rollback.
  const ch = me.createDataChannel('chat', { negotiated: true, id: 0 });
  dc = ch;
  ch.onopen = () => {
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
  $('remote').srcObject = null;
  showState(me.connectionState);
  clearInterval(statsTimer);
  statsTimer = setInterval(showStats, 1000);
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
  await pc.setLocalDescription(await pc.createOffer());
  sendDescription();
}

// sessionId is the o= line's session id: random per RTCPeerConnection,
// kept for all its descriptions, and compared as a number of up to 20
// digits by padding.
function sessionId(sdp) {
  const m = /^o=\S+ (\d+)/m.exec(sdp || '');
  return m ? m[1].padStart(24, '0') : '';
}

async function onOffer(data) {
  if (!pc) return;
  const theirs = sessionId(data.sdp);
  if (pc.remoteDescription && sessionId(pc.remoteDescription.sdp) === theirs) {
    return; // a copy of what we already answered
  }
  if (pc.signalingState === 'have-local-offer' && !pc.remoteDescription) {
    if (sessionId(pc.localDescription.sdp) > theirs) {
      sendDescription(); // impolite: ours stands; make sure they have it
      return;
    }
    await pc.setLocalDescription({ type: 'rollback' });
  } else {
    logLine('new peer in the room', 'system');
    newPeer();
  }
  await pc.setRemoteDescription({ type: 'offer', sdp: data.sdp });
  await addEarly();
  await pc.setLocalDescription(await pc.createAnswer());
  sendDescription();
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
    // Candidates of an offer that lost a glare, or of a peer that left,
    // do not fit the current description; they are not needed.
    console.debug('icebox: candidate dropped', err.message);
  }
}

// waitingText is what a tab alone in its room says after Start.
const waitingText = 'Waiting for the other side: nobody else is in this room yet. Send them the link above, or open it in a second tab, and press Start there.';

function showState(state) {
  $('conn').textContent = state === 'new' ? 'new: waiting for the other side' : state;
  $('conn').className = { connected: 'good', failed: 'bad' }[state] || '';
  if (state === 'new') {
    say(waitingText);
  } else if (state === 'connecting' && $('message').textContent === waitingText) {
    say('');
  } else if (state === 'failed') {
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
  if (pc) pc.close();
  pc = null;
  if (local) for (const t of local.getTracks()) t.stop();
  local = null;
  $('local').srcObject = null;
  $('remote').srcObject = null;
  $('start').disabled = false;
  $('relay').disabled = false;
  $('hangup').disabled = true;
  $('text').disabled = true;
  $('send').disabled = true;
  $('sig').textContent = 'not connected';
  showState('closed');
}

$('start').onclick = start;
$('hangup').onclick = hangup;
$('room-form').onsubmit = (e) => {
  e.preventDefault();
  const name = $('room').value.trim();
  location.search = '?room=' + encodeURIComponent(name || randomName(8));
};
$('chat-form').onsubmit = (e) => {
  e.preventDefault();
  const text = $('text').value;
  if (!text || !dc || dc.readyState !== 'open') return;
  dc.send(text);
  logLine('me: ' + text, 'me');
  $('text').value = '';
};
