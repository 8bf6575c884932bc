// Starts Converse.js 14 with the settings the test injected as window.CONVERSE_TEST_SETTINGS
// (an init script) and exposes what the test needs through a whitelisted plugin:
//   window.testApi         Converse's private API (_converse.api)
//   window.converseEvents  [name, ...] of the connection events seen, in order
const converse = window.converse;
window.converseEvents = [];

converse.plugins.add('boshd-test', {
    initialize() {
        const api = this._converse.api;
        window.testApi = api;
        for (const name of ['connected', 'reconnected', 'disconnected', 'logout']) {
            api.listen.on(name, () => {
                window.converseEvents.push(name);
                console.info('converse event: ' + name);
            });
        }
    },
});

converse.initialize({
    // Defaults for a test: no discovery (the URL is given), no silent reconnect loops, local
    // assets, English, no sounds or desktop notifications.
    discover_connection_methods: false,
    auto_reconnect: false,
    assets_path: '/node_modules/converse.js/dist/',
    i18n: 'en',
    loglevel: 'debug',
    play_sounds: false,
    show_desktop_notifications: false,
    view_mode: 'overlayed', // 'fullscreen' shows sponsor logos loaded from conversejs.org
    ...window.CONVERSE_TEST_SETTINGS,
    whitelisted_plugins: ['boshd-test'],
});
