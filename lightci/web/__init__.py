"""The web edge: webhooks, the JSON API, Server-Sent Events, the HTML pages.

    app      the Bottle app: error answers, headers, the URL table; serve()
    hooks    POST /hooks/<job>
    api      the JSON API, /health and /metrics
    events   a build's log and state as Server-Sent Events
    pages    the HTML pages and their forms
    auth     token, login session, CSRF
    render   templates and the formatting they use
    answers  JSON answers and request bodies, the bottom of the package

Handlers are thin: they read the request, call one domain function (the same
``builds.trigger / cancel / retry / status`` the CLI calls) and render.
"""
