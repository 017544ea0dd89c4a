"""What evaluations show people: plots of the metric curves (``plots``), a
picture of what the queries retrieve (``grid``) and one self-contained HTML
page with all of it (``html``).  matplotlib is optional; the grid needs only
Pillow."""
