// The chat page: plain DOM on top of the bidiweb client (window.bidiweb,
// served by the sample server at /bidiweb.js).
(function () {
  'use strict';

  var $ = function (id) { return document.getElementById(id); };
  var els = {
    join: $('join'), nick: $('nick'), room: $('room'), joinError: $('join-error'),
    chat: $('chat'), messages: $('messages'), say: $('say'), text: $('text'),
    presence: $('presence'), count: $('count'), leave: $('leave'),
    status: $('status'), roomTitle: $('room-title'),
  };

  var session = null;
  var me = null;          // { nick, room }
  var seen = new Set();   // ids of 'said' messages already shown

  // --- connection state -----------------------------------------------------

  function setStatus(kind, text) {
    els.status.className = 'status ' + kind;
    els.status.textContent = text;
  }

  // --- rendering --------------------------------------------------------------

  function time(at) {
    var d = new Date(typeof at === 'number' ? at : Date.now());
    return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  }

  function addLine(className, parts) {
    var nearBottom = els.messages.scrollHeight - els.messages.scrollTop - els.messages.clientHeight < 40;
    var li = document.createElement('li');
    li.className = className;
    parts.forEach(function (p) {
      var span = document.createElement('span');
      span.className = p[0];
      span.textContent = p[1];
      li.appendChild(span);
    });
    els.messages.appendChild(li);
    if (nearBottom) els.messages.scrollTop = els.messages.scrollHeight;
  }

  function notice(text, at, className) {
    addLine('notice ' + (className || ''), [['time', time(at)], ['text', text]]);
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

  function onMessage(m) {
    if (!m || typeof m !== 'object') return;
    switch (m.type) {
      case 'said':
        if (seen.has(m.id)) return; // a redelivery after a server crash
        seen.add(m.id);
        addLine(me && m.from === me.nick ? 'said mine' : 'said', [['time', time(m.at)], ['from', m.from], ['text', m.text]]);
        break;
      case 'joined':
        notice(m.nick + ' joined', m.at);
        break;
      case 'left':
        notice(m.nick + ' left', m.at);
        break;
      case 'presence':
        renderPresence(Array.isArray(m.nicks) ? m.nicks : []);
        break;
      case 'error':
        notice(m.message, Date.now(), 'error');
        break;
    }
  }

  // --- session ------------------------------------------------------------------

  function describeClose(ev) {
    switch (ev.code) {
      case 'CLIENT': return 'you left';
      case 'EXPIRED': return 'the session expired';
      case 'SESSION_LOST': return 'the server lost the session (restarted?)';
      case 'SERVER': return 'closed by the server: ' + ev.reason;
      default: return ev.reason || ev.code;
    }
  }

  function connect(nick, room) {
    me = { nick: nick, room: room };
    seen = new Set();
    els.messages.textContent = '';
    renderPresence([]);
    els.roomTitle.textContent = '#' + room;
    els.joinError.hidden = true;
    els.chat.hidden = true;
    setStatus('connecting', 'connecting…');

    var s = bidiweb.open(new URL('session', location.href).href, { meta: { nick: nick, room: room } });
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
      // Announces us to the room (see samples/chat/server.ts).
      s.send({ type: 'hello' }).catch(function () {});
    });
    // The client emits 'retry' when a request backs off but nothing when a
    // retry succeeds: show "reconnecting" until a message arrives or the
    // backoff has been over for a moment with no new failure.
    var retryTimer = null;
    function recovered() {
      clearTimeout(retryTimer);
      retryTimer = null;
      if (s === session && s.state === 'open' && els.status.classList.contains('retrying')) setStatus('open', 'connected');
    }
    s.on('retry', function (info) {
      if (s !== session) return;
      var secs = Math.max(1, Math.round(info.delayMs / 1000));
      setStatus('retrying', 'reconnecting in ' + secs + ' s (attempt ' + info.attempt + ')');
      clearTimeout(retryTimer);
      retryTimer = setTimeout(function check() {
        if (s.retrying) retryTimer = setTimeout(check, 1000);
        else recovered();
      }, info.delayMs + 1500);
    });
    s.on('message', function (m) {
      if (s !== session) return;
      recovered();
      onMessage(m);
    });
    s.on('close', function (ev) {
      clearTimeout(retryTimer);
      if (s !== session) return;
      var why = describeClose(ev);
      setStatus('closed', 'closed: ' + why);
      if (els.chat.hidden) {
        // Never got in: show why on the join form.
        els.joinError.textContent = ev.code === 'REJECTED' ? ev.reason : 'could not join: ' + why;
        els.joinError.hidden = false;
      } else {
        notice(ev.code === 'CLIENT' ? 'you left the room' : 'disconnected: ' + why, Date.now(), ev.code === 'CLIENT' ? '' : 'error');
      }
      els.join.hidden = false;
      els.say.querySelector('button').disabled = true;
      els.text.disabled = true;
    });
    s.on('error', function () { /* transient: the 'retry' event shows it */ });

    els.say.querySelector('button').disabled = false;
    els.text.disabled = false;
  }

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
    if (!text || !session) return;
    els.text.value = '';
    session.send({ type: 'say', text: text }).then(null, function (err) {
      notice('not sent: ' + (err && err.message ? err.message : String(err)), Date.now(), 'error');
      if (!els.text.value) els.text.value = text;
    });
  });

  els.leave.addEventListener('click', function () {
    if (session) session.close();
  });

  window.addEventListener('pagehide', function () {
    if (session && session.state !== 'closed') session.close();
  });

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
