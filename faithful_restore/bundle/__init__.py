"""The bundle as a user sees it: the :class:`Bundle` value, ``save_bundle`` (``save``), ``load_bundle``
(``load``: integrity first, then ``restore``), argument checks (``checks``) and the
:class:`BundleManager` (``manager``).
"""
