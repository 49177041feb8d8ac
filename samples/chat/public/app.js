// The chat page: plain DOM on top of the bidiweb client (window.bidiweb,
// served by the sample server at /bidiweb.js). Chat protocol: samples/chat/chat.ts.
//
// What the page shows, and where (the e2e tests read the same attributes):
// - connection: #status[data-state] = connecting | open | retrying | closing | closed
//   (closed also has data-code, the close code; data-transport: 'websocket' or 'http',
//   what carried the last message in, see ?transport= below);
// - each line of ours: li.mine[data-state] = sending → acked (the send() promise
//   resolved: the server's handler has it) or failed; li.pending until the room's
//   copy came back (then it takes its place in the room's order);
// - every line: li.said[data-id] (stable id: history and live copies are shown once);
// - after Leave, or when the room refused our nick, the room panel (#chat) is hidden
//   and the join form is back (#join-error says why the nick was refused).
(function () {
  'use strict';

  var $ = function (id) { return document.getElementById(id); };
  var els = {
    join: $('join'), nick: $('nick'), room: $('room'), joinError: $('join-error'),
    chat: $('chat'), messages: $('messages'), say: $('say'), text: $('text'),
    presence: $('presence'), count: $('count'), leave: $('leave'),
    status: $('status'), roomTitle: $('room-title'), via: $('via'),
  };

  var session = null;
  var me = null;          // { nick, room }
  var refusal = null;     // the server's message when our nick was taken (chat.ts: code 'nick-taken')
  var seen = new Set();   // ids of 'said' lines shown
  var cidCounter = 0;
  // ?transport=websocket | auto | http (default): how sends and watches travel. WebSocket needs
  // instances that serve bidiweb/ws (WS=1, see ../instance.ts); 'auto' falls back to HTTP without.
  var transport = new URLSearchParams(location.search).get('transport');
  if (transport !== 'websocket' && transport !== 'auto') transport = 'http';

  // --- connection state -----------------------------------------------------

  function setStatus(state, text, code) {
    els.status.className = 'status ' + state;
    els.status.dataset.state = state;
    if (code) els.status.dataset.code = code; else delete els.status.dataset.code;
    els.status.textContent = text;
  }

  function currentStatus() { return els.status.dataset.state; }

  // --- rendering --------------------------------------------------------------

  function time(at) {
    var d = new Date(typeof at === 'number' ? at : Date.now());
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit', hour12: false });
  }

  function span(className, text) {
    var s = document.createElement('span');
    s.className = className;
    s.textContent = text;
    return s;
  }

  function nearBottom() {
    return els.messages.scrollHeight - els.messages.scrollTop - els.messages.clientHeight < 60;
  }

  /** Lines of ours still waiting for the room's copy stay at the bottom; everything else goes above them. */
  function insertLine(li) {
    var stick = nearBottom();
    var firstPending = els.messages.querySelector('li.pending');
    els.messages.insertBefore(li, firstPending);
    if (stick) els.messages.scrollTop = els.messages.scrollHeight;
  }

  function saidLine(m, extraClass) {
    var li = document.createElement('li');
    var mine = me && m.from === me.nick;
    li.className = 'said' + (mine ? ' mine' : '') + (extraClass ? ' ' + extraClass : '');
    li.dataset.id = m.id;
    li.appendChild(span('time', time(m.at)));
    li.appendChild(span('from', m.from));
    li.appendChild(span('text', m.text));
    return li;
  }

  function notice(text, at, className) {
    var li = document.createElement('li');
    li.className = 'notice' + (className ? ' ' + className : '');
    li.appendChild(span('time', time(at)));
    li.appendChild(span('text', text));
    insertLine(li);
  }

  function renderPresence(nicks) {
    els.presence.textContent = '';
    nicks.forEach(function (nick) {
      var li = document.createElement('li');
      li.textContent = nick;
      if (me && nick === me.nick) li.className = 'me';
      els.presence.appendChild(li);
    });
    els.count.textContent = '(' + nicks.length + ')';
  }

  /** A line we are sending: shown at once, at the bottom, with its delivery state. */
  function pendingLine(text, cid) {
    var li = document.createElement('li');
    li.className = 'said mine pending';
    li.dataset.cid = cid;
    li.dataset.state = 'sending';
    li.appendChild(span('time', time(Date.now())));
    li.appendChild(span('from', me.nick));
    li.appendChild(span('text', text));
    var tick = span('tick', '');
    tick.title = 'sending…';
    li.appendChild(tick);
    els.messages.appendChild(li);
    els.messages.scrollTop = els.messages.scrollHeight;
    return li;
  }

  function setLineState(li, state, title) {
    li.dataset.state = state;
    var tick = li.querySelector('.tick');
    if (tick) tick.title = title;
  }

  /** The room's copy of a line of ours came back: it leaves the pending tail and takes its place. */
  function ownPendingFor(m) {
    if (!me || m.from !== me.nick) return null;
    if (m.cid) return els.messages.querySelector('li.pending[data-cid="' + CSS.escape(String(m.cid)) + '"]');
    // A server that does not echo cid (e.g. samples/nest): our lines come back in the order we sent them.
    return els.messages.querySelector('li.pending');
  }

  function onSaid(m) {
    if (seen.has(m.id)) {
      // A second copy: history + live, or a redelivery after a crash. Counted for the e2e tests.
      els.messages.dataset.repeats = String(Number(els.messages.dataset.repeats || 0) + 1);
      return;
    }
    seen.add(m.id);
    var own = ownPendingFor(m);
    if (own) {
      own.classList.remove('pending');
      own.dataset.id = m.id;
      own.querySelector('.time').textContent = time(m.at);
      insertLine(own); // before the remaining pending lines, i.e. where it already is
      return;
    }
    insertLine(saidLine(m));
  }

  function onHistory(lines) {
    // Lines already shown live came after the history read; older ones go on top.
    var first = els.messages.firstChild;
    var added = 0;
    lines.forEach(function (m) {
      if (!m || typeof m !== 'object' || seen.has(m.id)) return;
      seen.add(m.id);
      els.messages.insertBefore(saidLine(m, 'history'), first);
      added++;
    });
    if (added > 0) {
      var li = document.createElement('li');
      li.className = 'divider';
      li.textContent = added === 1 ? '1 earlier message' : added + ' earlier messages';
      els.messages.insertBefore(li, els.messages.firstChild);
    }
    els.messages.scrollTop = els.messages.scrollHeight;
  }

  function onMessage(m) {
    if (!m || typeof m !== 'object') return;
    switch (m.type) {
      case 'said':
        onSaid(m);
        break;
      case 'history':
        onHistory(Array.isArray(m.lines) ? m.lines : []);
        break;
      case 'joined':
        notice((me && m.nick === me.nick ? 'you joined' : m.nick + ' joined'), m.at);
        break;
      case 'left':
        notice(m.nick + ' left', m.at);
        break;
      case 'presence':
        renderPresence(Array.isArray(m.nicks) ? m.nicks : []);
        break;
      case 'error':
        // Our nick turned out to be taken (a namesake joined at the same moment): the
        // server closes the session next, and the close handler shows this on the join form.
        if (m.code === 'nick-taken') refusal = String(m.message);
        else notice(m.message, Date.now(), 'error');
        break;
    }
  }

  // --- session ------------------------------------------------------------------

  function describeClose(ev) {
    switch (ev.code) {
      case 'CLIENT': return 'you left';
      case 'EXPIRED': return 'the session expired';
      case 'SESSION_LOST': return 'the server lost the session (restarted?)';
      case 'SESSION_CLOSED': return 'the server closed the session';
      case 'SERVER': return ev.reason === 'nick-taken' ? 'the nick is taken' : 'closed by the server: ' + ev.reason;
      default: return ev.reason || ev.code;
    }
  }

  /** Back to the join form with no room shown: after Leave, or when the room refused us. */
  function showJoinOnly() {
    els.chat.hidden = true;
    els.messages.textContent = '';
    renderPresence([]);
    els.count.textContent = '';
    els.roomTitle.textContent = '';
    els.via.textContent = '';
  }

  function connect(nick, room) {
    me = { nick: nick, room: room };
    refusal = null;
    seen = new Set();
    els.messages.textContent = '';
    renderPresence([]);
    els.roomTitle.textContent = '#' + room;
    els.joinError.hidden = true;
    els.chat.hidden = true;
    setStatus('connecting', 'connecting…');

    var s = null;
    var recoverTimer = null;

    // Back to normal after trouble: the state the session is really in.
    function recovered() {
      clearTimeout(recoverTimer);
      recoverTimer = null;
      if (s !== session || currentStatus() !== 'retrying') return;
      if (navigator.onLine === false) return; // an answer to a request made before the network went away
      if (s.state === 'open') setStatus('open', 'connected');
      else if (s.state === 'connecting') setStatus('connecting', 'connecting…');
    }

    // The client tells us when a request fails and backs off ('retry'), not
    // when the next one gets through. So the page watches its own requests:
    // any HTTP answer means the server is reachable again, and so does a
    // request made after the trouble that is still pending (held open by the
    // server: a watch) after a moment — an unreachable network fails at once.
    function trackingFetch(url, init) {
      var armed = currentStatus() === 'retrying';
      var timer = armed ? setTimeout(recovered, 1500) : null;
      var p = window.fetch(url, init);
      p.then(function (res) {
        clearTimeout(timer);
        var instance = res.headers.get('x-chat-instance');
        if (instance && s === session) els.via.textContent = 'via ' + instance;
        if (res.status < 500) recovered();
      }, function () {
        clearTimeout(timer);
      });
      return p;
    }

    s = bidiweb.open(new URL('session', location.href).href, {
      meta: { nick: nick, room: room },
      transport: transport,
      fetch: trackingFetch,
      retry: { initialDelayMs: 250, maxDelayMs: 5000 },
    });
    session = s;

    s.on('state', function (state) {
      if (s !== session) return;
      if (state === 'open') setStatus('open', 'connected');
      else if (state === 'connecting') setStatus('connecting', 'connecting…');
      else if (state === 'closing') setStatus('closing', 'leaving…');
    });
    s.on('open', function () {
      if (s !== session) return;
      setStatus('open', 'connected');
      els.join.hidden = true;
      els.chat.hidden = false;
      els.text.focus();
      // Announces us to the room and gets us the history (see samples/chat/chat.ts).
      s.send({ type: 'hello' }).catch(function () {});
    });
    s.on('retry', function (info) {
      if (s !== session) return;
      var secs = Math.max(1, Math.round(info.delayMs / 1000));
      var status = info.error && info.error.status;
      var why = navigator.onLine === false ? 'offline' : status ? 'server unavailable (HTTP ' + status + ')' : 'connection lost';
      setStatus('retrying', why + ' — retrying in ' + secs + ' s (attempt ' + info.attempt + ')');
      clearTimeout(recoverTimer);
      // A fallback for when no request happens to tell us: the backoff ended and nothing failed since.
      recoverTimer = setTimeout(function check() {
        if (s.retrying) recoverTimer = setTimeout(check, 1000);
        else recovered();
      }, info.delayMs + 3000);
    });
    s.on('message', function (m) {
      if (s !== session) return;
      els.status.dataset.transport = s.activeTransport;
      recovered();
      onMessage(m);
    });
    s.on('close', function (ev) {
      clearTimeout(recoverTimer);
      if (s !== session) return;
      var why = describeClose(ev);
      setStatus('closed', 'closed: ' + why, ev.code);
      els.messages.querySelectorAll('li.pending[data-state="sending"]').forEach(function (li) {
        setLineState(li, 'failed', 'not sent: ' + why);
      });
      var nickTaken = ev.code === 'SERVER' && ev.reason === 'nick-taken';
      if (els.chat.hidden || nickTaken) {
        // Never got in: show why on the join form.
        els.joinError.textContent = nickTaken
          ? refusal || 'the nick "' + me.nick + '" is taken in #' + me.room + ': choose another'
          : ev.code === 'REJECTED' ? ev.reason : 'could not join: ' + why;
        els.joinError.hidden = false;
        showJoinOnly();
        if (ev.status === 409 || nickTaken) els.nick.select();
      } else if (ev.code === 'CLIENT') {
        // Left: the old room goes away; the status line says "closed: you left".
        showJoinOnly();
      } else {
        // Lost: keep the transcript, say why, offer to join again.
        notice('disconnected: ' + why, Date.now(), 'error');
      }
      els.join.hidden = false;
      els.join.querySelector('button').textContent = 'Join again';
      els.say.querySelector('button').disabled = true;
      els.text.disabled = true;
    });
    s.on('error', function () { /* transient: the 'retry' event shows it */ });

    els.say.querySelector('button').disabled = false;
    els.text.disabled = false;
  }

  // The browser knows before the client does (its next request fails).
  window.addEventListener('offline', function () {
    if (session && session.state === 'open') setStatus('retrying', 'offline — waiting for the network');
  });
  window.addEventListener('online', function () {
    if (session && session.state === 'open' && currentStatus() === 'retrying') setStatus('retrying', 'back online — reconnecting…');
  });

  // --- forms ----------------------------------------------------------------------

  els.join.addEventListener('submit', function (e) {
    e.preventDefault();
    var nick = els.nick.value.trim();
    var room = els.room.value.trim().toLowerCase();
    if (!nick || !room) return;
    try { localStorage.setItem('bidiweb-chat-nick', nick); } catch (_) { /* private mode */ }
    if (location.hash !== '#' + room) history.replaceState(null, '', '#' + room);
    if (session && session.state !== 'closed') session.close();
    connect(nick, room);
  });

  els.say.addEventListener('submit', function (e) {
    e.preventDefault();
    var text = els.text.value.trim();
    if (!text || !session || session.state === 'closed' || session.state === 'closing') return;
    els.text.value = '';
    var cid = 'c' + Date.now().toString(36) + '-' + (++cidCounter);
    var li = pendingLine(text, cid);
    // Resolves when the server acked it: its handler ran, the line is in the room.
    session.send({ type: 'say', text: text, cid: cid }).then(function () {
      if (li.dataset.state === 'sending') setLineState(li, 'acked', 'acked by the server');
    }, function (err) {
      setLineState(li, 'failed', 'not sent: ' + (err && err.message ? err.message : String(err)));
    });
  });

  els.leave.addEventListener('click', function () {
    if (session) session.close();
  });

  // Closing the tab needs nothing here: the client sends DELETE itself when the page
  // is unloaded (closeOnPageHide), so the room sees "left" at once.

  // Prefill: the last nick, the room from the URL (#room).
  try { els.nick.value = localStorage.getItem('bidiweb-chat-nick') || ''; } catch (_) { /* private mode */ }
  var hashRoom = decodeURIComponent(location.hash.slice(1)).toLowerCase();
  if (/^[a-z0-9-]{1,32}$/.test(hashRoom)) els.room.value = hashRoom;
  if (typeof window.bidiweb === 'undefined') {
    els.joinError.textContent = 'The client library (/bidiweb.js) did not load.';
    els.joinError.hidden = false;
    els.join.querySelector('button').disabled = true;
  }
  (els.nick.value ? els.room : els.nick).focus();
})();
