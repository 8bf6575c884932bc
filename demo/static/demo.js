// The boshd demo client: stock StropheJS 5, log in, chat with the echo bot, over BOSH or
// WebSocket. Settings (boshd URLs, demo account, bot JID) come from /config.json.
import { $msg, $pres, Strophe } from '/vendor/strophe.js/strophe.esm.js';

const $ = (id) => document.getElementById(id);
const settings = await (await fetch('/config.json')).json();
const S = Strophe.Status;
const STATUS_NAMES = Object.fromEntries(Object.entries(S).map(([name, code]) => [code, name]));
let conn = null;

$('jid').value = settings.user;
$('password').value = settings.password;
$('echo-jid').textContent = settings.echo;

function setStatus(text, state) {
    $('status').textContent = text;
    $('status').dataset.state = state;
}

function show(text, cls) {
    const li = document.createElement('li');
    li.className = cls;
    li.textContent = text;
    $('messages').append(li);
    $('messages').scrollTop = $('messages').scrollHeight;
}

function wire(direction, data) {
    const pre = $('wire');
    pre.textContent += `${direction} ${data}\n`;
    if (pre.textContent.length > 200000) {
        pre.textContent = pre.textContent.slice(-100000);
    }
}

function online(connected) {
    $('connect').disabled = connected;
    $('disconnect').disabled = !connected;
    $('chat').hidden = !connected;
    for (const input of document.querySelectorAll('#login input')) {
        input.disabled = connected;
    }
}

function onMessage(stanza) {
    const body = stanza.getElementsByTagName('body')[0];
    if (body) {
        show(`${Strophe.getBareJidFromJid(stanza.getAttribute('from'))}: ${body.textContent}`, 'in');
    }
    return true; // keep the handler
}

$('login').addEventListener('submit', (event) => {
    event.preventDefault();
    const transport = document.querySelector('input[name="transport"]:checked').value;
    const service = transport === 'bosh' ? settings.bosh : settings.websocket;
    conn = new Strophe.Connection(service);
    conn.rawInput = (data) => wire('RECV', data);
    conn.rawOutput = (data) => wire('SENT', data);
    setStatus(`connecting over ${transport} to ${service} ...`, 'busy');
    conn.connect($('jid').value, $('password').value, (status, condition) => {
        const name = STATUS_NAMES[status];
        if (status === S.CONNECTED) {
            conn.addHandler(onMessage, null, 'message', 'chat');
            conn.send($pres());
            online(true);
            setStatus(`online as ${conn.jid} (${transport})`, 'online');
            show(`connected over ${transport}; say something`, 'info');
            $('text').focus();
        } else if (status === S.DISCONNECTED) {
            online(false);
            if ($('status').dataset.state !== 'error') {
                setStatus('offline', 'offline');
            }
        } else if ([S.CONNFAIL, S.AUTHFAIL, S.ERROR, S.CONNTIMEOUT].includes(status)) {
            setStatus(`${name}${condition ? ': ' + condition : ''}`, 'error');
        }
    });
});

$('disconnect').addEventListener('click', () => conn?.disconnect('user clicked disconnect'));

$('composer').addEventListener('submit', (event) => {
    event.preventDefault();
    const text = $('text').value;
    if (!text || !conn?.authenticated) {
        return;
    }
    conn.send($msg({ to: settings.echo, type: 'chat' }).c('body').t(text));
    show(`me: ${text}`, 'out');
    $('text').value = '';
});
