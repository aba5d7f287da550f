"""The consortium's SMART apps (issue 16): the referral workbench (PC, and the doctor app in a
phone layout) and the patient app 掌上医院, served as static ES modules under /apps/ and
registered as public SMART clients (PKCE S256). A plugin (plugins.py): nothing imports it."""
