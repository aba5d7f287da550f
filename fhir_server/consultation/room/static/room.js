// The consultation room's reference client: joins the Appointment's room at once (camera and
// microphone), connects to every other participant (a mesh of RTCPeerConnections; the newcomer
// sends the offers), reconnects when the socket drops, records and uploads on request.
// window.consultRoom.state() -> {peers, connected, framesDecoded} for tests and monitors.
"use strict";
(() => {
  const query = new URLSearchParams(location.search);
  const appointment = query.get("appointment") || "";
  let token = query.get("token") || "";
  const statusEl = document.getElementById("status");
  const recordButton = document.getElementById("record");
  const peers = new Map(); // peerId -> {pc, figure, video, queue, pending}
  let socket = null, local = null, iceServers = [], myId = null, framesDecoded = 0;
  let closeCode = null, stopped = false, recorder = null, lastUpload = null;

  // why the server closed the socket (rooms.py): these end the visit, others reconnect
  const FINAL = {
    4400: "服务器地址不被允许", 4401: "会诊令牌无效或已过期，请重新加入",
    4403: "无权加入此会诊", 4409: "已在其他窗口或设备加入此会诊", 4429: "会诊室已满",
    1009: "消息过大，连接已关闭",
  };
  const say = (text) => { statusEl.textContent = text; };

  function send(message) {
    if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message));
  }

  function peer(id) {
    let p = peers.get(id);
    if (p) return p;
    const pc = new RTCPeerConnection({ iceServers });
    const figure = document.createElement("figure");
    const video = document.createElement("video");
    video.autoplay = true; video.playsInline = true;
    const caption = document.createElement("figcaption");
    caption.textContent = "参会方 " + id.slice(0, 6);
    figure.append(video, caption);
    document.getElementById("videos").append(figure);
    p = { pc, figure, video, queue: Promise.resolve(), pending: [] };
    peers.set(id, p);
    for (const track of local.getTracks()) pc.addTrack(track, local);
    pc.onicecandidate = (e) => { if (e.candidate) send({ type: "candidate", to: id, candidate: e.candidate.toJSON() }); };
    pc.ontrack = (e) => { video.srcObject = e.streams[0]; recordButton.disabled = false; };
    pc.onconnectionstatechange = () => showState();
    return p;
  }

  function drop(id) {
    const p = peers.get(id);
    if (!p) return;
    p.pc.close(); p.figure.remove(); peers.delete(id); showState();
  }

  async function offer(id) {
    const { pc } = peer(id);
    await pc.setLocalDescription(await pc.createOffer());
    send({ type: "offer", to: id, sdp: pc.localDescription.toJSON() });
  }

  async function handle(m) {
    if (m.type === "welcome") {
      myId = m.peerId; iceServers = m.iceServers || []; if (m.token) token = m.token;
      for (const id of [...peers.keys()]) drop(id); // a reconnect starts afresh
      for (const id of m.peers) await offer(id);
      showState();
    } else if (m.type === "token") {
      token = m.token;
    } else if (m.type === "peer-joined") {
      showState();
    } else if (m.type === "peer-left") {
      drop(m.peerId);
    } else if (m.type === "offer" || m.type === "answer" || m.type === "candidate") {
      const p = peer(m.from);
      p.queue = p.queue.then(() => signal(p, m)).catch((e) => console.warn("signal", e));
    } else if (m.type === "error") {
      console.warn("signalling error", m);
    }
  }

  async function signal(p, m) {
    const pc = p.pc;
    if (m.type === "offer") {
      await pc.setRemoteDescription(m.sdp);
      await pc.setLocalDescription(await pc.createAnswer());
      send({ type: "answer", to: m.from, sdp: pc.localDescription.toJSON() });
    } else if (m.type === "answer") {
      await pc.setRemoteDescription(m.sdp);
    } else if (!pc.remoteDescription) {
      p.pending.push(m.candidate); return;
    } else {
      await pc.addIceCandidate(m.candidate);
    }
    for (const c of p.pending.splice(0)) await pc.addIceCandidate(c);
  }

  function connect() {
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const url = `${scheme}://${location.host}/consult-room/signal/${encodeURIComponent(appointment)}?token=${encodeURIComponent(token)}`;
    socket = new WebSocket(url);
    socket.onopen = () => say("已连接信令服务器，等待其他参会方…");
    socket.onmessage = (e) => handle(JSON.parse(e.data));
    socket.onclose = (e) => {
      closeCode = e.code;
      if (FINAL[e.code] || stopped) { say(FINAL[e.code] || "已离开"); stopped = true; return; }
      say("连接中断，正在重新连接…");
      setTimeout(connect, 1000);
    };
  }

  function showState() {
    const s = state();
    if (!stopped && myId) say(`已加入会诊：${s.peers} 位参会方，${s.connected} 路已连通`);
  }

  function state() {
    let connected = 0;
    for (const { pc } of peers.values()) if (pc.connectionState === "connected") connected++;
    return { peers: peers.size, connected, framesDecoded };
  }

  async function pollStats() {
    let total = 0;
    for (const { pc } of peers.values()) {
      const stats = await pc.getStats();
      stats.forEach((r) => { if (r.type === "inbound-rtp" && r.kind === "video") total += r.framesDecoded || 0; });
    }
    framesDecoded = total;
  }

  // recording: the first remote video (else our own) and every voice, mixed
  function recordingStream() {
    const remote = [...peers.values()].map((p) => p.video.srcObject).filter(Boolean);
    const video = (remote[0] || local).getVideoTracks().slice(0, 1);
    const audio = new AudioContext();
    const mix = audio.createMediaStreamDestination();
    for (const s of [local, ...remote]) if (s.getAudioTracks().length) audio.createMediaStreamSource(s).connect(mix);
    return new MediaStream([...video, ...mix.stream.getAudioTracks()]);
  }

  async function upload(blob) {
    say("正在上传录像…");
    const type = (blob.type || "video/webm").split(";")[0];
    const r = await fetch(`/consult-room/recording?token=${encodeURIComponent(token)}`,
                          { method: "POST", headers: { "Content-Type": type }, body: blob });
    const body = await r.json().catch(() => ({}));
    lastUpload = { status: r.status, media: r.ok ? `Media/${body.id}` : null };
    say(r.ok ? `录像已保存（Media/${body.id}）` : `录像上传失败（${r.status}）`);
  }

  recordButton.onclick = () => {
    if (recorder) { recorder.stop(); return; }
    const chunks = [];
    recorder = new MediaRecorder(recordingStream());
    recorder.ondataavailable = (e) => { if (e.data.size) chunks.push(e.data); };
    recorder.onstop = () => { recorder = null; recordButton.textContent = "开始录制"; upload(new Blob(chunks, { type: chunks[0]?.type || "video/webm" })); };
    recorder.start(1000);
    recordButton.textContent = "停止录制";
    say("正在录制…");
  };

  window.consultRoom = {
    state,
    closeCode: () => closeCode,
    lastUpload: () => lastUpload,
    record: () => recordButton.click(),
    leave: () => { stopped = true; if (socket) socket.close(1000); for (const id of [...peers.keys()]) drop(id); },
  };

  navigator.mediaDevices.getUserMedia({ video: true, audio: true }).then((stream) => {
    local = stream;
    document.getElementById("local").srcObject = stream;
    recordButton.disabled = false;
    setInterval(pollStats, 500);
    connect();
  }).catch((e) => say("无法打开摄像头或麦克风：" + e.message));
})();
