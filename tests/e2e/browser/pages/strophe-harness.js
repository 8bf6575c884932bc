// A thin promise API over a stock StropheJS 5 connection, for the Playwright tests.
// Everything the client sends and receives is written to the console ("SENT"/"RECV") so a
// failing test's artifacts show the wire traffic as the browser saw it.
import { $iq, $msg, $pres, Strophe } from '/node_modules/strophe.js/dist/strophe.esm.js';

const S = Strophe.Status;
const NAMES = Object.fromEntries(Object.entries(S).map(([name, code]) => [code, name]));
const XRD_NS = 'http://docs.oasis-open.org/ns/xri/xrd-1.0';

class Harness {
    constructor() {
        this.conn = null;
        this.statuses = [];       // [name, condition] for every status change, in order
        this.messages = [];       // {from, to, type, body} of every <message/> with a body
        this.presences = [];      // {from, type} of every <presence/>
    }

    _open(service, options) {
        const { maxRetries, ...strophe } = options;
        const conn = new Strophe.Connection(service, strophe);
        if (maxRetries !== undefined) {
            conn.maxRetries = maxRetries; // how often a failed BOSH request is re-sent
        }
        conn.rawInput = (data) => console.debug('RECV ' + data);
        conn.rawOutput = (data) => console.debug('SENT ' + data);
        this.conn = conn;
        return conn;
    }

    _callback(wanted, onReached = () => {}) {
        let resolve, reject;
        const done = new Promise((res, rej) => { resolve = res; reject = rej; });
        const fatal = [S.ERROR, S.CONNFAIL, S.AUTHFAIL, S.CONNTIMEOUT, S.ATTACHFAIL];
        const callback = (status, condition) => {
            this.statuses.push([NAMES[status], condition ?? null]);
            console.info(`status ${NAMES[status]} ${condition ?? ''}`);
            if (status === wanted) {
                onReached();
                resolve(this.info());
            } else if (fatal.includes(status) || status === S.DISCONNECTED) {
                reject(new Error(`${NAMES[status]} ${condition ?? ''}`.trim()));
            }
        };
        return { callback, done };
    }

    _handlers() {
        const conn = this.conn;
        conn.addHandler((stanza) => {
            const body = stanza.getElementsByTagName('body')[0];
            if (body) {
                this.messages.push({
                    from: stanza.getAttribute('from'),
                    to: stanza.getAttribute('to'),
                    type: stanza.getAttribute('type'),
                    body: body.textContent,
                });
            }
            return true;
        }, null, 'message');
        conn.addHandler((stanza) => {
            this.presences.push({
                from: stanza.getAttribute('from'),
                type: stanza.getAttribute('type') ?? 'available',
            });
            return true;
        }, null, 'presence');
    }

    info() {
        const proto = this.conn?._proto;
        return {
            jid: this.conn?.jid ?? null,
            sid: proto?.sid ?? null,
            rid: proto?.rid ?? null,
            restored: Boolean(this.conn?.restored),
        };
    }

    /** Log in; resolves with {jid, sid, rid} once CONNECTED. */
    connect(service, jid, password, options = {}) {
        const conn = this._open(service, options);
        const { callback, done } = this._callback(S.CONNECTED, () => this._handlers());
        conn.connect(jid, password, callback);
        return done;
    }

    /** Attach to a BOSH session someone else created and logged in (prebinding): Strophe's
     *  attach(jid, sid, rid, callback); its first request carries exactly `rid`. */
    attach(service, jid, sid, rid, options = {}) {
        const conn = this._open(service, options);
        const { callback, done } = this._callback(S.ATTACHED, () => this._handlers());
        conn.attach(jid, sid, rid, callback);
        return done;
    }

    /** XEP-0156 discovery from the page: fetch a host-meta document (XRD, or JRD if the URL
     *  ends in .json) cross-origin, without credentials; resolves with the announced
     *  {bosh, websocket} URLs (null if absent). */
    async discover(url) {
        const response = await fetch(url, { mode: 'cors', credentials: 'omit' });
        if (!response.ok) {
            throw new Error(`host-meta ${url}: HTTP ${response.status}`);
        }
        let links;
        if (url.endsWith('.json')) {
            links = (await response.json()).links ?? [];
        } else {
            const xrd = new DOMParser().parseFromString(await response.text(), 'application/xml');
            links = Array.from(xrd.getElementsByTagNameNS(XRD_NS, 'Link'), (link) => ({
                rel: link.getAttribute('rel'),
                href: link.getAttribute('href'),
            }));
        }
        const href = (rel) => links.find((link) => link.rel === rel)?.href ?? null;
        return {
            bosh: href('urn:xmpp:alt-connections:xbosh'),
            websocket: href('urn:xmpp:alt-connections:websocket'),
        };
    }

    /** Re-attach to the BOSH session cached in sessionStorage (options.keepalive). */
    restore(service, jid, options = {}) {
        const conn = this._open(service, { keepalive: true, ...options });
        const { callback, done } = this._callback(S.ATTACHED, () => this._handlers());
        conn.restore(jid, callback);
        return done;
    }

    /** Roster get: resolves with [{jid, name, subscription}]. */
    roster() {
        return new Promise((resolve, reject) => {
            this.conn.sendIQ(
                $iq({ type: 'get' }).c('query', { xmlns: Strophe.NS.ROSTER }),
                (iq) => resolve(Array.from(iq.getElementsByTagName('item'), (item) => ({
                    jid: item.getAttribute('jid'),
                    name: item.getAttribute('name'),
                    subscription: item.getAttribute('subscription'),
                }))),
                (iq) => reject(new Error('roster error: ' + (iq ? Strophe.serialize(iq) : 'timeout'))),
                5000,
            );
        });
    }

    presence(to = null) {
        this.conn.send(to ? $pres({ to }) : $pres());
    }

    send(to, body) {
        this.conn.send($msg({ to, type: 'chat' }).c('body').t(body));
    }

    /** Close the session (Strophe sends unavailable presence + terminate / <close/>). */
    disconnect() {
        const { callback, done } = this._callback(S.DISCONNECTED);
        this.conn.connect_callback = callback;
        this.conn.disconnect('test done');
        return done;
    }
}

window.harness = new Harness();
