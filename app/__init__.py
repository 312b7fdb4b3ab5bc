"""The cdviz dashboard: ``streamlit run app/main.py [-- --runs-root DIR --run NAME]``.

    main.py        entry: run picker in the sidebar, routes pages with st.navigation
    app_pages/     one thin view per page (overview, layers, item explorer, error link,
                   before/after, attribution)
    state.py       run discovery under the runs root, cached loaders of tables, maps and images
    results.py     analysis results: from the run's report, this server's cache, or computed here
    links.py       the view in the URL (query parameters) and links into filtered item views
    figures.py     dashboard figures (Vega-Lite): attention overlays, head grid, bars, per-layer lines
    charts.py      how a page draws them: SVG drawn on the server, or live on the sidebar's switch
"""
