"""Tkinter front ends: a reusable form (``form``) and the getfile download window.

Rule: Tk is touched from the Tk thread only. Anything that can block (a socket, a child process)
runs in a worker thread that reports through a queue the window polls with ``after()``.
"""
