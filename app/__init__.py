"""The cdviz dashboard: ``streamlit run app/main.py [-- --runs-root DIR --run NAME]``.

    main.py        entry: run picker in the sidebar, routes pages with st.navigation
    app_pages/     one thin view per page (overview, layers, item explorer, error link,
                   before/after, attribution)
    state.py       run discovery under the runs root, cached loaders, the calls into analyses/
    figures.py     dashboard-only pure figures (attention overlay, difference map, bars)
"""
