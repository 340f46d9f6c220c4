// Speaks icebox's /connect protocol (docs/protocol.md in the icebox
// repository). Every frame is {"id": kind, "data": "<JSON as a string>"}:
// the data is encoded twice because that is what the mobile app's
// kotlinx serialization produces, and the app's strict decoder rejects any
// key not in the protocol, so this file never adds keys of its own to
// frames a peer receives.

// openSignal connects to /connect in the given room and sends WsInit.
// onFrame(id, data) gets each frame with its data already decoded (null for
// ""); onClose(text) is called once when the socket ends. With presence,
// WsInit opts in to WsPresence frames (who is in the room); the server
// never forwards WsInit, so the opt-in reaches no app. It returns
// {send(id, obj), close()}.
export function openSignal(room, onFrame, onClose, { presence = false } = {}) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const url = `${scheme}//${location.host}/connect?room=${encodeURIComponent(room)}`;
  const ws = new WebSocket(url);
  let closed = false;
  const end = (text) => {
    if (!closed) {
      closed = true;
      onClose(text);
    }
  };
  ws.onopen = () => ws.send(JSON.stringify({ id: 'WsInit', data: presence ? JSON.stringify({ presence: true }) : '' }));
  ws.onmessage = (e) => {
    let id, data;
    try {
      const f = JSON.parse(e.data);
      id = f.id;
      data = f.data === '' ? null : JSON.parse(f.data);
    } catch (err) {
      console.warn('icebox: unreadable frame', e.data, err);
      return;
    }
    onFrame(id, data);
  };
  ws.onerror = () => end('could not reach icebox at ' + url);
  ws.onclose = (e) => end(`signaling closed (code ${e.code}${e.reason ? ': ' + e.reason : ''})`);
  return {
    send(id, obj) {
      if (ws.readyState === WebSocket.OPEN) {
        ws.send(JSON.stringify({ id, data: JSON.stringify(obj) }));
      }
    },
    close() {
      closed = true;
      ws.close();
    },
  };
}

// iceServersOf copies only the fields RTCConfiguration knows from a
// WsIceServers frame, so a future field cannot break the page.
export function iceServersOf(data) {
  return ((data && data.iceServers) || []).map((s) => {
    const out = { urls: s.urls };
    if (s.username) out.username = s.username;
    if (s.credential) out.credential = s.credential;
    return out;
  });
}

// randomName returns n characters that are easy to read aloud and type on
// a phone: lower-case letters and digits without 0/o and 1/l.
export function randomName(n) {
  const abc = 'abcdefghijkmnpqrstuvwxyz23456789';
  const bytes = crypto.getRandomValues(new Uint8Array(n));
  return Array.from(bytes, (b) => abc[b % abc.length]).join('');
}
